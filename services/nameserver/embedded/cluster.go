package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultClusterReadyTimeout bounds the wait for a cluster (or a
// restarted node) to elect its JetStream meta leader and see every peer.
const DefaultClusterReadyTimeout = 30 * time.Second

// ClusterConfig says how many nodes a Cluster has and where they keep
// their data.
type ClusterConfig struct {
	// Nodes is the number of servers (≥ 1), named n1, n2, ...
	Nodes int
	// Dir holds each node's data in Dir/<name>.
	Dir string
	// Configure, when set, adjusts every node's server options last, at
	// each start (operator mode: see package auth).
	Configure func(*server.Options) error
	// Logger receives the servers' warnings and errors; nil discards them.
	Logger *slog.Logger
	// ReadyTimeout bounds StartCluster's and Restart's wait for the
	// cluster to be ready; default DefaultClusterReadyTimeout.
	ReadyTimeout time.Duration
	// ProbeOptions are added to the connections that check whether each
	// node's JetStream API answers (in operator mode: a user's
	// credentials of an account with JetStream).
	ProbeOptions []nats.Option
}

// Cluster is a JetStream cluster of embedded servers on loopback, each
// with its own name, client and route ports and data folder. Kill stops
// one node as a crash of its process would (its clients and routes lose
// their connections at once; it hands no leadership over), Restart
// starts it again on the same ports with the same data.
type Cluster struct {
	cfg   ClusterConfig
	nodes []*clusterNode
}

type clusterNode struct {
	name        string
	clientPort  int
	clusterPort int
	dataDir     string

	mu  sync.Mutex
	srv *server.Server // nil while killed
}

// StartCluster starts the nodes together and waits (ReadyTimeout, and
// ctx) until the cluster is ready (see WaitReady). On error every node
// started is stopped.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	if cfg.Nodes < 1 {
		return nil, fmt.Errorf("cluster: %d nodes", cfg.Nodes)
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = DefaultClusterReadyTimeout
	}
	ports, err := freePorts(2 * cfg.Nodes)
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg}
	for i := range cfg.Nodes {
		name := fmt.Sprintf("n%d", i+1)
		dir := filepath.Join(cfg.Dir, name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, &clusterNode{name: name, clientPort: ports[2*i], clusterPort: ports[2*i+1], dataDir: dir})
	}
	// Start them together: each waits for routes before its JetStream
	// meta group can elect a leader.
	errs := make(chan error, cfg.Nodes)
	for i := range c.nodes {
		go func() { errs <- c.start(i) }()
	}
	var all []error
	for range cfg.Nodes {
		all = append(all, <-errs)
	}
	if err := errors.Join(all...); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.WaitReady(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// freePorts finds k distinct free loopback ports (listened on and closed:
// another process could take one in between).
func freePorts(k int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range k {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
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
	s, err := Start(Config{
		Listen: fmt.Sprintf("127.0.0.1:%d", nd.clientPort), DataDir: nd.dataDir, Name: nd.name,
		ClusterListen: fmt.Sprintf("127.0.0.1:%d", nd.clusterPort), Routes: c.routes(),
		Configure: c.cfg.Configure, Logger: c.cfg.Logger,
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
func (c *Cluster) Server(i int) *server.Server {
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

// Close kills every node.
func (c *Cluster) Close() {
	for i := range c.nodes {
		c.Kill(i)
	}
}

// Restart starts killed node i again with the same name, ports and data,
// and waits (ReadyTimeout, and ctx) until the cluster is ready again (see
// WaitReady).
func (c *Cluster) Restart(ctx context.Context, i int) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		// The ports were just closed: retry briefly if one is still taken.
		err := c.start(i)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return c.WaitReady(ctx)
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
// (server.DEFAULT_GLOBAL_ACCOUNT).
func (c *Cluster) StreamLeader(account, stream string) int {
	for i := range c.nodes {
		if s := c.Server(i); s != nil && s.JetStreamIsStreamLeader(account, stream) {
			return i
		}
	}
	return -1
}

// WaitReady waits, at most ReadyTimeout (and ctx), until a meta leader
// is elected, it sees every running node as an online JetStream peer,
// and every running node's meta state is current.
func (c *Cluster) WaitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ReadyTimeout)
	defer cancel()
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
			if s := c.Server(l); s != nil && len(s.JetStreamClusterPeers()) >= running && c.apiAnswers(ctx) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready within %s (meta leader %d): %w", c.cfg.ReadyTimeout, c.MetaLeader(), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// apiAnswers tells whether the JetStream API answers a client of every
// running node (right after an election a request may still go
// unanswered).
func (c *Cluster) apiAnswers(ctx context.Context) bool {
	for i := range c.nodes {
		s := c.Server(i)
		if s == nil {
			continue
		}
		opts := append([]nats.Option{nats.Timeout(time.Second), nats.NoReconnect()}, c.cfg.ProbeOptions...)
		nc, err := nats.Connect(s.ClientURL(), opts...)
		if err != nil {
			return false
		}
		js, err := jetstream.New(nc)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, time.Second)
			_, err = js.AccountInfo(actx)
			cancel()
		}
		nc.Close()
		if err != nil {
			return false
		}
	}
	return true
}

// StreamState is node i's own copy of stream of account (its replica's
// state, leader or not); ok is false when the node is killed or holds no
// replica of the stream.
func (c *Cluster) StreamState(i int, account, stream string) (st server.StreamState, ok bool) {
	s := c.Server(i)
	if s == nil {
		return st, false
	}
	ad, err := s.JszAccount(&server.JSzOptions{Account: account, Streams: true})
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

// StreamCurrent tells whether node i's replica of stream (of account) is
// current: its raft group caught up and its last sequence reached the one
// the leader had just before. (Not equal to the leader's now: under a
// steady write load a follower is always a few messages behind the
// leader at any instant, and two reads never agree.)
func (c *Cluster) StreamCurrent(i int, account, stream string) bool {
	l := c.StreamLeader(account, stream)
	s := c.Server(i)
	if s == nil || l < 0 || !s.JetStreamIsStreamCurrent(account, stream) {
		return false
	}
	lead, ok1 := c.StreamState(l, account, stream)
	mine, ok2 := c.StreamState(i, account, stream)
	return ok1 && ok2 && mine.LastSeq >= lead.LastSeq
}
