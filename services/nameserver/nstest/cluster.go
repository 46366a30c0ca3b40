package nstest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// ClusterReadyTimeout bounds the wait for a cluster (or a restarted node)
// to elect its JetStream meta leader and see every peer.
const ClusterReadyTimeout = 30 * time.Second

// ClusterOptions adjust StartCluster.
type ClusterOptions struct {
	// Configure, when set, adjusts every node's server options last (as
	// embedded.Config.Configure), e.g. operator mode.
	Configure func(*natsserver.Options) error
}

// Cluster is a JetStream cluster of embedded NATS servers on loopback,
// each with its own name (n1, n2, ...), client and route ports and data
// folder. Kill stops one node as a crash of its process would (its
// clients lose their connection), Restart starts it again on the same
// ports with the same data. Every node is shut down when the test ends.
type Cluster struct {
	t     testing.TB
	opts  ClusterOptions
	nodes []*clusterNode
}

type clusterNode struct {
	name        string
	clientPort  int
	clusterPort int
	dataDir     string

	mu  sync.Mutex
	srv *natsserver.Server // nil while killed
}

// StartCluster starts an n-node cluster (n ≥ 1) and waits, at most
// ClusterReadyTimeout, until its JetStream meta leader is elected and
// knows every node as an online JetStream peer.
func StartCluster(t testing.TB, n int, opts ...ClusterOptions) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("StartCluster: %d nodes", n)
	}
	c := &Cluster{t: t}
	if len(opts) > 0 {
		c.opts = opts[0]
	}
	ports := freePorts(t, 2*n)
	for i := range n {
		c.nodes = append(c.nodes, &clusterNode{
			name: fmt.Sprintf("n%d", i+1), clientPort: ports[2*i], clusterPort: ports[2*i+1], dataDir: t.TempDir(),
		})
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.Kill(i)
		}
	})
	// Start them together: each waits for routes before its JetStream
	// meta group can elect a leader.
	errs := make(chan error, n)
	for i := range c.nodes {
		go func() { errs <- c.start(i) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	c.WaitReady()
	return c
}

// freePorts finds k distinct free loopback ports (listened on and closed:
// another process could take one in between, which tests accept).
func freePorts(t testing.TB, k int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range k {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		_ = l.Close()
	}
	return ports
}

func (c *Cluster) routes() string {
	var r []string
	for _, nd := range c.nodes {
		r = append(r, fmt.Sprintf("nats-route://127.0.0.1:%d", nd.clusterPort))
	}
	return strings.Join(r, ",")
}

func (c *Cluster) start(i int) error {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.srv != nil {
		return nil
	}
	s, err := embedded.Start(embedded.Config{
		Listen: fmt.Sprintf("127.0.0.1:%d", nd.clientPort), DataDir: nd.dataDir, Name: nd.name,
		ClusterListen: fmt.Sprintf("127.0.0.1:%d", nd.clusterPort), Routes: c.routes(),
		Configure: c.opts.Configure,
	})
	if err != nil {
		return fmt.Errorf("node %s: %w", nd.name, err)
	}
	nd.srv = s
	return nil
}

// Size is the number of nodes, running or not.
func (c *Cluster) Size() int { return len(c.nodes) }

// Name is the server name of node i.
func (c *Cluster) Name(i int) string { return c.nodes[i].name }

// Server is node i's server; nil while it is killed.
func (c *Cluster) Server(i int) *natsserver.Server {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	return nd.srv
}

// URL is node i's client URL (also while it is killed).
func (c *Cluster) URL(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[i].clientPort) }

// URLs is every node's client URL, comma-separated, starting with node
// first (-1: in node order): what a client that should fail over to the
// other nodes is given.
func (c *Cluster) URLs(first int) string {
	var us []string
	if first >= 0 {
		us = append(us, c.URL(first))
	}
	for i := range c.nodes {
		if i != first {
			us = append(us, c.URL(i))
		}
	}
	return strings.Join(us, ",")
}

// Kill shuts node i down (its clients are disconnected, its leaderships
// move to other nodes) and waits until it is gone. Killing a killed node
// does nothing.
func (c *Cluster) Kill(i int) {
	nd := c.nodes[i]
	nd.mu.Lock()
	s := nd.srv
	nd.srv = nil
	nd.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart starts killed node i again with the same name, ports and data,
// and waits (at most ClusterReadyTimeout) until the cluster is ready
// again (see WaitReady).
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		// The ports were just closed: retry briefly if one is still taken.
		err := c.start(i)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.WaitReady()
}

// MetaLeader is the index of the node that leads the JetStream meta
// group, or -1 while there is none.
func (c *Cluster) MetaLeader() int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// StreamLeader is the index of the node that leads stream of account, or
// -1. Insecure servers keep everything in account "$G"
// (natsserver.DEFAULT_GLOBAL_ACCOUNT).
func (c *Cluster) StreamLeader(account, stream string) int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsStreamLeader(account, stream) {
			return i
		}
	}
	return -1
}

// WaitReady waits, at most ClusterReadyTimeout, until a meta leader is
// elected, it sees every running node as an online JetStream peer, and
// every running node's meta state is current.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	deadline := time.Now().Add(ClusterReadyTimeout)
	for {
		running := 0
		current := true
		for i := range c.nodes {
			if s := c.Server(i); s != nil {
				running++
				current = current && s.JetStreamIsCurrent()
			}
		}
		if l := c.MetaLeader(); l >= 0 && current {
			if s := c.Server(l); s != nil && len(s.JetStreamClusterPeers()) >= running && c.apiAnswers() {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster not ready within %s (meta leader %d)", ClusterReadyTimeout, c.MetaLeader())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// apiAnswers tells whether the JetStream API answers a client of every
// running node (right after an election a request may still go
// unanswered).
func (c *Cluster) apiAnswers() bool {
	for i := range c.nodes {
		s := c.Server(i)
		if s == nil {
			continue
		}
		nc, err := nats.Connect(s.ClientURL(), nats.Timeout(time.Second), nats.NoReconnect())
		if err != nil {
			return false
		}
		js, err := jetstream.New(nc)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = js.AccountInfo(ctx)
			cancel()
		}
		nc.Close()
		if err != nil {
			return false
		}
	}
	return true
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

// StreamState is node i's own copy of stream of account (its replica's
// state, leader or not); ok is false when the node is killed or holds no
// replica of the stream.
func (c *Cluster) StreamState(i int, account, stream string) (st natsserver.StreamState, ok bool) {
	s := c.Server(i)
	if s == nil {
		return st, false
	}
	ad, err := s.JszAccount(&natsserver.JSzOptions{Account: account, Streams: true})
	if err != nil || ad == nil {
		return st, false
	}
	for _, sd := range ad.Streams {
		if sd.Name == stream {
			return sd.State, true
		}
	}
	return st, false
}

// WaitStreamCurrent waits, at most within, until node i's replica of
// stream (of account) is current: its raft group caught up and its last
// sequence is the leader's. It returns how long that took.
func (c *Cluster) WaitStreamCurrent(i int, account, stream string, within time.Duration) time.Duration {
	c.t.Helper()
	start := time.Now()
	for {
		l := c.StreamLeader(account, stream)
		if s := c.Server(i); s != nil && l >= 0 && s.JetStreamIsStreamCurrent(account, stream) {
			mine, ok1 := c.StreamState(i, account, stream)
			lead, ok2 := c.StreamState(l, account, stream)
			if ok1 && ok2 && mine.LastSeq == lead.LastSeq {
				return time.Since(start)
			}
		}
		if time.Since(start) > within {
			c.t.Fatalf("node %s: stream %s not current within %s", c.Name(i), stream, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
