package server_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/schemas"
	"github.com/rserpool/rsp/services/nameserver/auth"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// connOf names nc's connection as a PE puts it in its registration.
func connOf(t testing.TB, nc *nats.Conn) *events.Conn {
	t.Helper()
	cid, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	return &events.Conn{Server: nc.ConnectedServerId(), CID: cid}
}

// credsSigner signs with the user of a creds file, over nc.
func credsSigner(t testing.TB, nc *nats.Conn, path string) *signer {
	tok, kp := nstest.ReadCreds(t, path)
	return &signer{t: t, nc: nc, kp: kp, jwt: tok}
}

// report publishes a signed failure report about pool/id.
func (s *signer) report(pool, id string) {
	s.t.Helper()
	body := events.Marshal(events.FailureReport{PEID: id, Time: time.Now().UTC(), Reason: "test"})
	s.publish(events.Subject("default", events.KindFailure, pool), nuid.Next(), body)
}

// nextChange waits for a change on sub, checks it against the schema and
// decodes it.
func nextChange(t testing.TB, sub *nats.Subscription, within time.Duration) events.Change {
	t.Helper()
	m := nextMsg(t, sub, within)
	if err := schemas.Validate("change", m.Data); err != nil {
		t.Fatal(err)
	}
	return decode[events.Change](t, m.Data)
}

// noChange fails if a change arrives on sub within d.
func noChange(t testing.TB, sub *nats.Subscription, d time.Duration) {
	t.Helper()
	if m, err := sub.NextMsg(d); err == nil {
		t.Fatalf("unexpected change: %s", m.Data)
	}
}

func wantRemove(t testing.TB, c events.Change, id, reason string) {
	t.Helper()
	if c.Op != events.OpRemove || c.PEID != id || c.Reason != reason || c.Element == nil || c.Element.PEID != id {
		t.Fatalf("change %+v, want remove %s (%s) with its element", c, id, reason)
	}
}

// barrier waits until the (one) replica handled every event published
// before it: events of a scope are handled in stream order, one by one.
func barrier(t testing.TB, s *signer) {
	t.Helper()
	id := "barrier-" + nuid.Next()[12:]
	if out := s.register("barrier", registration(id, 1)); !out.Accepted {
		t.Fatal(out.Error)
	}
}

// helperEnv makes the test binary a PE child process (TestHelperPE).
const helperEnv = "RSP_TEST_HELPER_PE"

// TestHelperPE is not a test: run by startChildPE as a child process, it
// registers a PE over its own connection, naming it, and waits to be
// killed.
func TestHelperPE(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("the PE child process of TestDisconnectRemovesPE")
	}
	creds := os.Getenv("RSP_TEST_CREDS")
	nc, err := nats.Connect(os.Getenv("RSP_TEST_URL"), natsconn.Creds(creds))
	if err != nil {
		fmt.Println("connect:", err)
		os.Exit(1)
	}
	reg := registration(os.Getenv("RSP_TEST_PE"), 1)
	reg.Conn = connOf(t, nc)
	if out := credsSigner(t, nc, creds).register(os.Getenv("RSP_TEST_POOL"), reg); !out.Accepted {
		fmt.Println("refused:", out.Error)
		os.Exit(1)
	}
	fmt.Println("registered")
	select {}
}

// startChildPE starts a child process that registers PE id in pool over
// its own connection to s, and returns once it is registered.
func startChildPE(t *testing.T, s *natsserver.Server, creds, pool, id string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPE$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "RSP_TEST_URL="+s.ClientURL(), "RSP_TEST_CREDS="+creds,
		"RSP_TEST_POOL="+pool, "RSP_TEST_PE="+id)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the PE child process ended before registering")
			}
			if l == "registered" {
				go func() {
					for range lines {
					}
				}()
				return cmd
			}
			if strings.HasPrefix(l, "refused") || strings.HasPrefix(l, "connect") {
				t.Fatalf("PE child process: %s", l)
			}
		case <-deadline:
			t.Fatal("the PE child process did not register within 30 s")
		}
	}
}

// TestDisconnectRemovesPE: a PE process killed with SIGKILL (its socket
// closes, nothing is deregistered) leaves the pool with reason
// "disconnected" within a second, not after its lifetime (30 s here).
func TestDisconnectRemovesPE(t *testing.T) {
	s, st := nstest.StartSecure(t)
	nstest.StartSecureNameServer(t, s, st, "default", server.Config{})
	pu := nstest.ConnectCreds(t, s, st.CredsPath("default", auth.RolePU))
	changes := mustSub(t, pu, "rsp.default.changes.echo")
	if err := pu.Flush(); err != nil {
		t.Fatal(err)
	}

	child := startChildPE(t, s, st.CredsPath("default", auth.RolePE), "echo", "crash-1")
	if c := nextChange(t, changes, 5*time.Second); c.Op != events.OpAdd || c.PEID != "crash-1" {
		t.Fatalf("change %+v, want add crash-1", c)
	}
	// The record names the child's connection and fits the schema.
	admin := nstest.ConnectCreds(t, s, st.CredsPath("default", auth.RoleAdmin))
	js, _ := jetstream.New(admin)
	kv, err := js.KeyValue(context.Background(), events.Bucket("default"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), "echo.crash-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := schemas.Validate("record", e.Value()); err != nil {
		t.Fatal(err)
	}
	rec := decode[events.Record](t, e.Value())
	if rec.Conn == nil || rec.Conn.Server != s.ID() || rec.Conn.CID == 0 {
		t.Fatalf("record conn %+v, want the child's connection on server %s", rec.Conn, s.ID())
	}

	start := time.Now()
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c := nextChange(t, changes, 5*time.Second)
	took := time.Since(start)
	wantRemove(t, c, "crash-1", events.ReasonDisconnected)
	t.Logf("kill -9 → remove/disconnected in %s (grace %s)", took, server.DefaultDisconnectGrace)
	if took > time.Second {
		t.Fatalf("removed %s after the kill, want within 1 s", took)
	}
	m, err := pu.Request("rsp.default.resolve.echo", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if a := decode[events.ResolveAnswer](t, m.Data); a.Error == nil || a.Error.Code != events.CodeNotFound {
		t.Fatalf("resolve after the crash: %s", m.Data)
	}
}

// TestReregisterWithinGrace: a PE whose connection drops but that
// registers again over a new connection within the grace period stays;
// a PE on the same connection that does not is removed.
func TestReregisterWithinGrace(t *testing.T) {
	s, st := nstest.StartSecure(t)
	nstest.StartSecureNameServer(t, s, st, "default", server.Config{})
	pu := nstest.ConnectCreds(t, s, st.CredsPath("default", auth.RolePU))
	changes := mustSub(t, pu, "rsp.default.changes.echo")
	if err := pu.Flush(); err != nil {
		t.Fatal(err)
	}

	peCreds := st.CredsPath("default", auth.RolePE)
	var raw net.Conn
	a := nstest.ConnectCreds(t, s, peCreds, nats.NoReconnect(), nats.SetCustomDialer(dialerFunc(func(network, addr string) (net.Conn, error) {
		c, err := net.Dial(network, addr)
		raw = c
		return c, err
	})))
	b := nstest.ConnectCreds(t, s, peCreds)
	onA, onB := credsSigner(t, a, peCreds), credsSigner(t, b, peCreds)

	phoenix := registration("phoenix", 1)
	phoenix.Conn = connOf(t, a)
	gone := registration("gone", 1)
	gone.Conn = connOf(t, a)
	for _, r := range []events.Registration{phoenix, gone} {
		if out := onA.register("echo", r); !out.Accepted {
			t.Fatal(out.Error)
		}
		nextChange(t, changes, 5*time.Second)
	}

	// The connection drops under the client (no goodbye), and phoenix
	// registers again at once over b, as the client library does after a
	// reconnect.
	start := time.Now()
	_ = raw.Close()
	phoenix.Seq, phoenix.Time, phoenix.Conn = 2, time.Now().UTC(), connOf(t, b)
	if out := onB.register("echo", phoenix); !out.Accepted {
		t.Fatal(out.Error)
	}
	if d := time.Since(start); d > server.DefaultDisconnectGrace {
		t.Skipf("re-registration took %s, more than the grace: the machine is too slow for this test", d)
	}
	c := nextChange(t, changes, 5*time.Second)
	wantRemove(t, c, "gone", events.ReasonDisconnected)
	t.Logf("connection closed → gone removed in %s", time.Since(start))
	noChange(t, changes, 2*server.DefaultDisconnectGrace)
	m, err := pu.Request("rsp.default.resolve.echo", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if a := decode[events.ResolveAnswer](t, m.Data); len(a.Elements) != 1 || a.Elements[0].PEID != "phoenix" {
		t.Fatalf("resolve: %s, want phoenix only", m.Data)
	}
	// A registration over a connection of the same PE process that then
	// closes cleanly (nc.Close, as a process does at exit without
	// deregistering) is taken out too.
	phoenix.Seq, phoenix.Time = 3, time.Now().UTC()
	if out := onB.register("echo", phoenix); !out.Accepted {
		t.Fatal(out.Error)
	}
	b.Close()
	wantRemove(t, nextChange(t, changes, 5*time.Second), "phoenix", events.ReasonDisconnected)
}

type dialerFunc func(network, addr string) (net.Conn, error)

func (f dialerFunc) Dial(network, addr string) (net.Conn, error) { return f(network, addr) }

// healthyTCP is a listening TCP address that accepts and closes.
func healthyTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
}

// deadTCP is a TCP address nobody listens on.
func deadTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// reportsOf reads the reports of pool/id from the reports bucket.
func reportsOf(t *testing.T, nc *nats.Conn, pool, id string) events.Reports {
	t.Helper()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), events.ReportsBucket("default"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(context.Background(), events.Key(pool, id))
	if err != nil {
		return nil
	}
	if err := schemas.Validate("reports", e.Value()); err != nil {
		t.Fatal(err)
	}
	return decode[events.Reports](t, e.Value())
}

// TestFailureReports: one reporter, however often it reports, never takes
// out a healthy PE (its own check passes); three distinct reporters
// within the window do.
func TestFailureReports(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	changes := mustSub(t, nc, "rsp.default.changes.echo")
	pe := newSigner(t, nc)
	reg := registration("healthy", 1)
	reg.Transports = []events.Transport{{Proto: "tcp", Addr: healthyTCP(t)}}
	if out := pe.register("echo", reg); !out.Accepted {
		t.Fatal(out.Error)
	}
	nextChange(t, changes, 5*time.Second)

	one := newSigner(t, nc)
	for range 5 {
		one.report("echo", "healthy")
	}
	barrier(t, pe)
	if r := reportsOf(t, nc, "echo", "healthy"); len(r) != 1 {
		t.Fatalf("reports %v, want one reporter", r)
	}
	noChange(t, changes, time.Second) // the check (a TCP connect) passes
	if a := resolve(t, nc, "echo", events.ResolveRequest{}); len(a.Elements) != 1 {
		t.Fatalf("one reporter took the healthy PE out: %+v", a)
	}

	// Reports about an unknown PE change nothing.
	one.report("echo", "nobody")
	newSigner(t, nc).report("echo", "nobody")
	newSigner(t, nc).report("echo", "nobody")
	barrier(t, pe)
	if r := reportsOf(t, nc, "echo", "nobody"); r != nil {
		t.Fatalf("reports of an unknown PE were kept: %v", r)
	}

	newSigner(t, nc).report("echo", "healthy")
	newSigner(t, nc).report("echo", "healthy")
	wantRemove(t, nextChange(t, changes, 5*time.Second), "healthy", events.ReasonFailed)
	if a := resolve(t, nc, "echo", events.ResolveRequest{}); a.Error == nil {
		t.Fatalf("resolve after removal: %+v", a)
	}
	// The reports are forgotten right after the change is announced.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r := reportsOf(t, nc, "echo", "healthy")
		if r == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reports kept after removal: %v", r)
		}
	}
}

// TestReportWindowPerScope: per-scope settings; reports older than the
// window do not count.
func TestReportWindowPerScope(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{NoChecks: true,
		ScopeReports: map[string]server.ReportSettings{"default": {MaxBadPEReports: 2, Window: time.Second}}})
	nc := connect(t, s)
	changes := mustSub(t, nc, "rsp.default.changes.echo")
	pe := newSigner(t, nc)
	if out := pe.register("echo", registration("slow", 1)); !out.Accepted {
		t.Fatal(out.Error)
	}
	nextChange(t, changes, 5*time.Second)
	r1, r2 := newSigner(t, nc), newSigner(t, nc)
	r1.report("echo", "slow")
	barrier(t, pe)
	time.Sleep(1200 * time.Millisecond)
	r2.report("echo", "slow")
	barrier(t, pe)
	noChange(t, changes, 100*time.Millisecond)
	r1.report("echo", "slow")
	wantRemove(t, nextChange(t, changes, 5*time.Second), "slow", events.ReasonFailed)
}

// TestReportsAcrossReplicas: reports handled by different replicas count
// together (they meet in the reports bucket, not in a replica's memory).
func TestReportsAcrossReplicas(t *testing.T) {
	s := startNATS(t)
	a := startNameServer(t, s, server.Config{ID: "a", NoChecks: true})
	nc := connect(t, s)
	changes := mustSub(t, nc, "rsp.default.changes.echo")
	pe := newSigner(t, nc)
	if out := pe.register("echo", registration("shared", 1)); !out.Accepted {
		t.Fatal(out.Error)
	}
	nextChange(t, changes, 5*time.Second)
	newSigner(t, nc).report("echo", "shared")
	newSigner(t, nc).report("echo", "shared")
	barrier(t, pe)
	a.Stop()
	startNameServer(t, s, server.Config{ID: "b", NoChecks: true})
	noChange(t, changes, 100*time.Millisecond)
	newSigner(t, nc).report("echo", "shared")
	wantRemove(t, nextChange(t, changes, 5*time.Second), "shared", events.ReasonFailed)
}

// TestReportedPEChecked: the name server checks a reported PE itself; a
// failed check takes it out after one report, a passed one leaves it, at
// most one check per PE per second, and never on a subject outside the
// pool's service subjects.
func TestReportedPEChecked(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	changes := mustSub(t, nc, "rsp.default.changes.echo")
	pe := newSigner(t, nc)
	reporter := newSigner(t, nc)
	register := func(id string, tr ...events.Transport) {
		t.Helper()
		r := registration(id, 1)
		r.Transports = tr
		if out := pe.register("echo", r); !out.Accepted {
			t.Fatal(out.Error)
		}
		nextChange(t, changes, 5*time.Second)
	}

	// nats transport, no responders.
	register("ghost", events.Transport{Proto: "nats", Subject: events.ServiceSubject("default", "echo", "ghost")})
	start := time.Now()
	reporter.report("echo", "ghost")
	wantRemove(t, nextChange(t, changes, 5*time.Second), "ghost", events.ReasonFailed)
	t.Logf("one report → ghost (no responders) removed in %s", time.Since(start))

	// tcp transport, nobody listening.
	register("refused", events.Transport{Proto: "tcp", Addr: deadTCP(t)})
	reporter.report("echo", "refused")
	wantRemove(t, nextChange(t, changes, 5*time.Second), "refused", events.ReasonFailed)

	// A nats transport that answers: checked once, however often reported.
	var checks atomic.Int32
	subj := events.ServiceSubject("default", "echo", "alive")
	if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
		if m.Header.Get(events.HeaderCheck) == "1" {
			checks.Add(1)
		}
		_ = m.Respond(nil)
	}); err != nil {
		t.Fatal(err)
	}
	register("alive", events.Transport{Proto: "tcp", Addr: deadTCP(t)}, events.Transport{Proto: "nats", Subject: subj})
	for range 5 {
		reporter.report("echo", "alive")
	}
	barrier(t, pe)
	noChange(t, changes, 500*time.Millisecond)
	if n := checks.Load(); n != 1 {
		t.Fatalf("alive was checked %d times, want once (at most one check per PE per second)", n)
	}

	// A nats transport on another subject is never requested (the name
	// server may publish anywhere; a PE must not aim it).
	var requested atomic.Int32
	if _, err := nc.Subscribe("elsewhere.api", func(*nats.Msg) { requested.Add(1) }); err != nil {
		t.Fatal(err)
	}
	register("aimed", events.Transport{Proto: "nats", Subject: "elsewhere.api"})
	reporter.report("echo", "aimed")
	barrier(t, pe)
	noChange(t, changes, 500*time.Millisecond)
	if requested.Load() != 0 {
		t.Fatal("the name server sent a check to a subject outside rsp.default.svc.echo.>")
	}
}

// TestServiceCheckOperatorMode: with the users of package auth, the name
// server's check reaches a PE serving its service subject, and the PE's
// answer reaches the name server (the pe user's response permission).
func TestServiceCheckOperatorMode(t *testing.T) {
	s, st := nstest.StartSecure(t)
	nstest.StartSecureNameServer(t, s, st, "default", server.Config{})
	pu := nstest.ConnectCreds(t, s, st.CredsPath("default", auth.RolePU))
	changes := mustSub(t, pu, "rsp.default.changes.echo")
	if err := pu.Flush(); err != nil {
		t.Fatal(err)
	}
	peCreds := nstest.IssueCreds(t, st, "default", auth.RolePE, "echo")
	peConn := nstest.ConnectCreds(t, s, peCreds)
	pe := credsSigner(t, peConn, peCreds)
	reporter := credsSigner(t, pu, st.CredsPath("default", auth.RolePU))

	subj := events.ServiceSubject("default", "echo", "served")
	var checks atomic.Int32
	if _, err := peConn.Subscribe(subj, func(m *nats.Msg) {
		if m.Header.Get(events.HeaderCheck) != "" {
			checks.Add(1)
		}
		_ = m.Respond([]byte("ok"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := peConn.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"served", "silent"} {
		r := registration(id, 1)
		r.Transports = []events.Transport{{Proto: "nats", Subject: events.ServiceSubject("default", "echo", id)}}
		r.Conn = connOf(t, peConn)
		if out := pe.register("echo", r); !out.Accepted {
			t.Fatal(out.Error)
		}
		nextChange(t, changes, 5*time.Second)
	}
	// A pu's request to the service subject gets the PE's answer.
	if m, err := pu.Request(subj, []byte("hi"), 5*time.Second); err != nil || string(m.Data) != "ok" {
		t.Fatalf("pu request: %v %v", m, err)
	}
	reporter.report("echo", "silent")
	wantRemove(t, nextChange(t, changes, 5*time.Second), "silent", events.ReasonFailed)
	reporter.report("echo", "served")
	noChange(t, changes, time.Second)
	if checks.Load() != 1 {
		t.Fatalf("served was checked %d times, want 1", checks.Load())
	}
}

func TestFailureConfigRefused(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	for _, c := range []struct {
		cfg  server.Config
		want string
	}{
		{server.Config{Scopes: []string{"a", "a_reports"}}, "cannot be served together"},
		{server.Config{ScopeReports: map[string]server.ReportSettings{"lab": {MaxBadPEReports: 2}}}, "not served"},
		{server.Config{MaxBadPEReports: -1}, "negative"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := server.Start(ctx, nc, c.cfg)
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error saying %q", c.cfg, err, c.want)
		}
	}
}
