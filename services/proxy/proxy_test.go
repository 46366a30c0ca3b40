package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// proxyBin is the rsp-proxy binary, built once for all tests.
var proxyBin string

func TestMain(m *testing.M) {
	nstest.RunWithBinaries(m, nstest.Binary{Name: "rsp-proxy", Pkg: ".", Path: &proxyBin})
}

const wait = 10 * time.Second // bound of every wait

// env is a test's world: an embedded NATS server with an insecure name
// server, and a client that registers the PEs.
type env struct {
	t   *testing.T
	s   *natsserver.Server
	url string
	c   *rspclient.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := nstest.StartNATS(t)
	nstest.StartNameServer(t, s, server.Config{})
	c, err := rspclient.New(nstest.Connect(t, s), rspclient.WithLogger(nstest.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, s: s, url: s.ClientURL(), c: c}
}

// pe is a TCP echo server registered as a PE of pool "echo": it answers
// each line with "<id>: <line>".
type pe struct {
	id  string
	ln  net.Listener
	reg *rspclient.Registration
}

func (e *env) startPE(id string) *pe {
	e.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				sc := bufio.NewScanner(conn)
				for sc.Scan() {
					if _, err := fmt.Fprintf(conn, "%s: %s\n", id, sc.Text()); err != nil {
						return
					}
				}
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	reg, err := e.c.Register(ctx, "echo", rspclient.PE{
		ID:         id,
		Transports: []events.Transport{{Proto: rspclient.ProtoTCP, Addr: ln.Addr().String()}},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = reg.Deregister(ctx)
	})
	return &pe{id: id, ln: ln, reg: reg}
}

// startProxy runs a proxy of pool "echo" in process, with its own cache,
// once the cache holds n members; it stops at the end of the test.
func (e *env) startProxy(n int) (addr string, pc *rspclient.PoolCache) {
	e.t.Helper()
	return e.startProxyOn(e.c, n)
}

// startProxyOn is startProxy with the cache of client c.
func (e *env) startProxyOn(c *rspclient.Client, n int) (addr string, pc *rspclient.PoolCache) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pc, err := c.Cache(ctx, "echo")
	if err != nil {
		e.t.Fatal(err)
	}
	waitFor(e.t, fmt.Sprintf("%d members in the cache", n), func() bool { return pc.Len() == n })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	p := newProxy(pc, time.Second, nstest.Logger())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln, time.Second) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Error(err)
			}
		case <-time.After(wait):
			e.t.Error("proxy did not stop")
		}
		pc.Close()
	})
	return ln.Addr().String(), pc
}

// waitFor polls cond every 10 ms for at most wait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// client is a connection through the proxy.
type client struct {
	t    *testing.T
	conn *net.TCPConn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &client{t: t, conn: conn.(*net.TCPConn), r: bufio.NewReader(conn)}
}

// ask sends line and returns the id of the PE that answered.
func (c *client) ask(line string) string {
	c.t.Helper()
	_ = c.conn.SetDeadline(time.Now().Add(wait))
	if _, err := fmt.Fprintln(c.conn, line); err != nil {
		c.t.Fatal(err)
	}
	got, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatalf("answer to %q: %v", line, err)
	}
	id, rest, ok := strings.Cut(strings.TrimSuffix(got, "\n"), ": ")
	if !ok || rest != line {
		c.t.Fatalf("answer %q to %q", got, line)
	}
	return id
}

// once opens a connection, asks one line and closes it.
func once(t *testing.T, addr, line string) string {
	t.Helper()
	c := dial(t, addr)
	defer c.conn.Close()
	return c.ask(line)
}

func TestRoundRobin(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"pe-a", "pe-b", "pe-c"} {
		e.startPE(id)
	}
	addr, _ := e.startProxy(3)
	var got []string
	for i := range 6 {
		got = append(got, once(t, addr, fmt.Sprint("hello ", i)))
	}
	want := []string{"pe-a", "pe-b", "pe-c", "pe-a", "pe-b", "pe-c"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("PEs %v, want %v", got, want)
	}
}

// TestReconnect: a PE deregisters while the proxy's NATS connection is
// down (its listener still accepts, so a proxy that missed the removal
// would still send connections to it); after the reconnect the proxy
// leaves it out within a second.
func TestReconnect(t *testing.T) {
	e := newEnv(t)
	e.startPE("pe-a")
	gone := e.startPE("pe-b")
	nc, gate := nstest.ConnectGated(t, e.s)
	c, err := rspclient.New(nc, rspclient.WithLogger(nstest.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	addr, pc := e.startProxyOn(c, 2)
	gate.CutOff(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := gone.reg.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	at := gate.Open(t)
	waitFor(t, "pe-b out of the cache", func() bool { return pc.Len() == 1 })
	took := time.Since(at)
	if took > time.Second {
		t.Errorf("pe-b left the cache %s after the reconnect, want within 1 s", took)
	}
	for i := range 4 {
		if id := once(t, addr, fmt.Sprint("after ", i)); id != "pe-a" {
			t.Fatalf("connection %d went to %s, want pe-a", i, id)
		}
	}
	t.Logf("the deregistration missed during the outage applied %s after the reconnect", took.Round(time.Millisecond))
}

func TestHalfClose(t *testing.T) {
	e := newEnv(t)
	e.startPE("pe-a")
	addr, _ := e.startProxy(1)
	c := dial(t, addr)
	_ = c.conn.SetDeadline(time.Now().Add(wait))
	if _, err := fmt.Fprint(c.conn, "one\ntwo\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(c.r)
	for sc.Scan() { // to EOF: the PE saw our EOF, answered, and closed
		lines = append(lines, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(lines, "|") != "pe-a: one|pe-a: two" {
		t.Fatalf("got %q", lines)
	}
}

// A PE whose listener is closed, still registered, is a dead PE: new
// connections fail over to the others, and the PE is reported (the name
// server checks it and takes it out as failed).
func TestDeadPE(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := e.c.Watch(ctx, "echo")
	if err != nil {
		t.Fatal(err)
	}
	removed := make(chan string, 1)
	go func() {
		for c := range ch {
			if c.Op == events.OpRemove && c.PEID == "pe-b" {
				removed <- c.Reason
				return
			}
		}
	}()
	e.startPE("pe-a")
	b := e.startPE("pe-b")
	e.startPE("pe-c")
	addr, pc := e.startProxy(3)
	_ = b.ln.Close()
	for i := range 6 {
		if id := once(t, addr, fmt.Sprint("hello ", i)); id == "pe-b" {
			t.Fatalf("connection %d reached the dead pe-b", i)
		}
	}
	for _, el := range pc.Members() {
		if el.PEID == "pe-b" {
			t.Fatal("pe-b still pickable in the proxy's cache")
		}
	}
	select {
	case reason := <-removed:
		if reason != events.ReasonFailed {
			t.Fatalf("pe-b removed as %q, want %q", reason, events.ReasonFailed)
		}
	case <-time.After(wait):
		t.Fatal("pe-b not taken out after the report")
	}
}

// When no PE accepts, the client's connection is closed.
func TestNoPEAccepts(t *testing.T) {
	e := newEnv(t)
	a := e.startPE("pe-a")
	addr, _ := e.startProxy(1)
	_ = a.ln.Close()
	c := dial(t, addr)
	_ = c.conn.SetDeadline(time.Now().Add(wait))
	if _, err := c.r.ReadByte(); err == nil {
		t.Fatal("read a byte from a connection no PE accepted")
	}
}

// A deregistered PE gets no new connections, while a connection open to
// it keeps working.
func TestDeregisteredPEDrains(t *testing.T) {
	e := newEnv(t)
	a := e.startPE("pe-a")
	e.startPE("pe-b")
	addr, pc := e.startProxy(2)
	old := dial(t, addr)
	if id := old.ask("first"); id != "pe-a" {
		t.Fatalf("first connection on %s, want pe-a", id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := a.reg.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pe-a out of the cache", func() bool { return pc.Len() == 1 })
	for i := range 4 {
		if id := once(t, addr, fmt.Sprint("new ", i)); id != "pe-b" {
			t.Fatalf("new connection %d on %s, want pe-b", i, id)
		}
	}
	if id := old.ask("still there"); id != "pe-a" {
		t.Fatalf("open connection answered by %s, want pe-a", id)
	}
}

var listening = regexp.MustCompile(`msg=listening .*addr=(\S+)`)

// The real binary: round robin, failover from a dead PE, and a drain on
// SIGTERM that lets the open connection finish.
func TestBinary(t *testing.T) {
	e := newEnv(t)
	e.startPE("pe-a")
	b := e.startPE("pe-b")
	e.startPE("pe-c")
	cmd := exec.Command(proxyBin, "--nats", e.url, "--pool", "echo", "--listen", "127.0.0.1:0",
		"--drain-timeout", "10s", "--data", t.TempDir())
	cmd.Env = append(os.Environ(), "RSP_SCOPE=", "RSP_CREDS=", "RSP_CONNECT_TIMEOUT=500ms")
	stderr := &nstest.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("rsp-proxy stderr:\n%s", stderr.String())
		}
	})
	var addr string
	waitFor(t, "listening log line", func() bool {
		m := listening.FindStringSubmatch(stderr.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})

	var got []string
	for i := range 3 {
		got = append(got, once(t, addr, fmt.Sprint("hello ", i)))
	}
	if strings.Join(got, " ") != "pe-a pe-b pe-c" {
		t.Fatalf("PEs %v, want pe-a pe-b pe-c", got)
	}

	_ = b.ln.Close()
	for i := range 4 {
		if id := once(t, addr, fmt.Sprint("after ", i)); id == "pe-b" {
			t.Fatalf("connection %d reached the dead pe-b", i)
		}
	}
	if !strings.Contains(stderr.String(), "reporting it") {
		t.Fatal("no log line of the failed connect to pe-b")
	}

	open := dial(t, addr)
	open.ask("before")
	waitFor(t, "log of the open connection", func() bool {
		return strings.Contains(stderr.String(), "active=1")
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "draining log line", func() bool { return strings.Contains(stderr.String(), "msg=draining") })
	// No longer accepting...
	if c, err := net.DialTimeout("tcp", addr, wait); err == nil {
		c.Close()
		t.Fatal("rsp-proxy still accepts after SIGTERM")
	}
	// ...but the open connection still works, and ends the drain.
	open.ask("during the drain")
	_ = open.conn.Close()
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("rsp-proxy: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("rsp-proxy did not exit after its last connection closed")
	}
	if !strings.Contains(stderr.String(), "msg=drained") {
		t.Fatal("no drained log line")
	}
}
