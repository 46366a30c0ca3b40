package nstest

import (
	"context"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// ClusterReadyTimeout bounds the wait for a cluster (or a restarted node)
// to elect its JetStream meta leader and see every peer.
const ClusterReadyTimeout = embedded.DefaultClusterReadyTimeout

// ClusterOptions adjust StartCluster.
type ClusterOptions struct {
	// Configure, when set, adjusts every node's server options last (as
	// embedded.Config.Configure), e.g. operator mode.
	Configure func(*natsserver.Options) error
	// ProbeOptions: see embedded.ClusterConfig (operator mode: a user's
	// credentials).
	ProbeOptions []nats.Option
}

// Cluster is an embedded.Cluster (a JetStream cluster of embedded servers
// on loopback whose nodes can be killed and restarted on the same ports
// with the same data) whose waits fail the test, and whose nodes are
// shut down when the test ends.
type Cluster struct {
	*embedded.Cluster
	t testing.TB
}

// StartCluster starts an n-node cluster (n ≥ 1) and waits, at most
// ClusterReadyTimeout, until its JetStream meta leader is elected and
// knows every node as an online JetStream peer.
func StartCluster(t testing.TB, n int, opts ...ClusterOptions) *Cluster {
	t.Helper()
	var o ClusterOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	ec, err := embedded.StartCluster(context.Background(), embedded.ClusterConfig{
		Nodes: n, Dir: t.TempDir(), Configure: o.Configure, ProbeOptions: o.ProbeOptions,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ec.Close)
	return &Cluster{Cluster: ec, t: t}
}

// Restart starts killed node i again with the same name, ports and data,
// and waits (at most ClusterReadyTimeout) until the cluster is ready
// again (see WaitReady).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if err := c.Cluster.Restart(context.Background(), i); err != nil {
		c.t.Fatal(err)
	}
}

// WaitReady waits, at most ClusterReadyTimeout, until a meta leader is
// elected, it sees every running node as an online JetStream peer, and
// every running node's meta state is current.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	if err := c.Cluster.WaitReady(context.Background()); err != nil {
		c.t.Fatal(err)
	}
}

// Connect opens a connection as rsp programs do (natsconn: reconnects
// for ever with backoff and jitter, to any of urls), closed at the end
// of the test. Give c.URLs(i) to start on node i and fail over to the
// others, c.URL(i) to stay on node i.
func (c *Cluster) Connect(t testing.TB, urls string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := natsconn.Dial(ctx, natsconn.Config{
		URLs: urls, Name: "rsp-test", Timeout: 2 * time.Second, Retry: 5 * time.Second, Logger: Logger(),
		// Start on the first URL given; reconnects try the others.
		Options: append([]nats.Option{nats.DontRandomize()}, opts...),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// StartNameServer starts a name-server replica connected as
// c.Connect(t, urls) does.
func (c *Cluster) StartNameServer(t testing.TB, urls string, cfg server.Config) *server.NameServer {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = Logger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := server.Start(ctx, c.Connect(t, urls), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	return ns
}

// WaitStreamCurrent waits, at most within, until node i's replica of
// stream (of account) is current: its raft group caught up and its last
// sequence is the leader's. It returns how long that took.
func (c *Cluster) WaitStreamCurrent(i int, account, stream string, within time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	for !c.StreamCurrent(i, account, stream) {
		if time.Since(start) > within {
			c.t.Fatalf("node %s: stream %s not current within %s", c.Name(i), stream, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}
