package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/auth"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// echoBin is the echo binary, built once for all tests.
var echoBin string

func TestMain(m *testing.M) {
	nstest.RunWithBinaries(m, nstest.Binary{Name: "echo", Pkg: ".", Path: &echoBin})
}

// env is a test's world: an embedded NATS server with a name server and
// a pool user.
type env struct {
	t    *testing.T
	url  string
	dir  string
	data string // echo's --data: where it looks for auth/creds/default/pe.creds
	pu   *rspclient.Client
	s    *natsserver.Server
	ns   *server.NameServer // the first name server
}

// newEnv starts a NATS server and a name server in insecure mode (no
// authorization, no disconnect detection).
func newEnv(t *testing.T) *env {
	t.Helper()
	s := nstest.StartNATS(t)
	ns := nstest.StartNameServer(t, s, server.Config{})
	pu, err := rspclient.New(nstest.Connect(t, s), rspclient.WithLogger(nstest.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	return &env{t: t, url: s.ClientURL(), dir: dir, data: filepath.Join(dir, "data"), pu: pu, s: s, ns: ns}
}

// newSecureEnv starts a NATS server in operator mode and a name server
// with JWT authorization, as `nameserver` runs by default: the name
// server takes out a PE whose connection closed (disconnect detection).
// The echo PEs find their pe.creds through --data, the pool user
// connects with pu.creds.
func newSecureEnv(t *testing.T) *env {
	t.Helper()
	s, st := nstest.StartSecure(t)
	nstest.StartSecureNameServer(t, s, st, "default", server.Config{})
	creds := st.CredsPath("default", auth.RolePU)
	pu, err := rspclient.New(nstest.ConnectCreds(t, s, creds), rspclient.WithCreds(creds), rspclient.WithLogger(nstest.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(st.Dir(), "creds", "default", "pe.creds"); st.CredsPath("default", auth.RolePE) != want {
		t.Fatalf("pe creds at %s, not %s where echo looks", st.CredsPath("default", auth.RolePE), want)
	}
	return &env{t: t, url: s.ClientURL(), dir: t.TempDir(), data: filepath.Dir(st.Dir()), pu: pu}
}

// modes runs f in insecure and in operator mode.
func modes(t *testing.T, f func(t *testing.T, e *env, secure bool)) {
	t.Run("insecure", func(t *testing.T) { f(t, newEnv(t), false) })
	t.Run("operator", func(t *testing.T) { f(t, newSecureEnv(t), true) })
}

// gone follows PE id from now on, in the background: when a remove of it
// comes on the pool's change stream, and when resolution stops returning
// it (polled every 10 ms).
type gone struct {
	t         *testing.T
	id        string
	removed   chan struct{}
	resolved  chan struct{}
	reason    string
	removedAt time.Time
	goneAt    time.Time
}

func (e *env) follow(id string) *gone {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	ch, err := e.pu.Watch(ctx, "echo")
	if err != nil {
		e.t.Fatal(err)
	}
	g := &gone{t: e.t, id: id, removed: make(chan struct{}), resolved: make(chan struct{})}
	go func() {
		for c := range ch {
			if c.Op == events.OpRemove && c.PEID == id {
				g.reason, g.removedAt = c.Reason, time.Now()
				close(g.removed)
				for range ch {
				}
				return
			}
		}
	}()
	go func() {
		for ctx.Err() == nil {
			if !e.resolves(id) {
				g.goneAt = time.Now()
				close(g.resolved)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return g
}

// wait waits at most d for both and returns the remove's reason, and how
// long after since each came.
func (g *gone) wait(d time.Duration, since time.Time) (reason string, removed, unresolved time.Duration) {
	g.t.Helper()
	timeout := time.After(d)
	for _, c := range []chan struct{}{g.removed, g.resolved} {
		select {
		case <-c:
		case <-timeout:
			g.t.Fatalf("%s not gone within %s", g.id, d)
		}
	}
	return g.reason, g.removedAt.Sub(since), g.goneAt.Sub(since)
}

// proc is a running echo PE.
type proc struct {
	id     string
	cmd    *exec.Cmd
	stderr *nstest.SyncBuffer
	done   chan struct{} // closed once it exited
}

// startEcho starts an echo PE with id and a 1 s lifetime and returns once
// it serves (at most 10 s); it is killed at the end of the test.
func (e *env) startEcho(id string, args ...string) *proc {
	e.t.Helper()
	args = append([]string{"--nats", e.url, "--id", id, "--lifetime", "1s", "--log-level", "debug",
		"--key", filepath.Join(e.dir, id+".nk"), "--data", e.data}, args...)
	cmd := exec.Command(echoBin, args...)
	cmd.Env = append(os.Environ(), "RSP_SCOPE=", "RSP_CREDS=", "RSP_NATS=")
	p := &proc{id: id, cmd: cmd, stderr: &nstest.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case ready <- sc.Text():
			default:
			}
		}
		_ = cmd.Wait()
		close(p.done)
	}()
	e.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-p.done
		if e.t.Failed() {
			e.t.Logf("echo %s stderr:\n%s", id, p.stderr.String())
		}
	})
	select {
	case line := <-ready:
		if !strings.HasPrefix(line, id+" serving pool echo on rsp.default.svc.echo."+id) {
			e.t.Fatalf("echo %s printed %q", id, line)
		}
	case <-p.done:
		e.t.Fatalf("echo %s exited: %s", id, p.stderr.String())
	case <-time.After(10 * time.Second):
		e.t.Fatalf("echo %s not serving within 10s: %s", id, p.stderr.String())
	}
	return p
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s to echo %s: %v", sig, p.id, err)
	}
}

// state is the process state of /proc/<pid>/stat: R, S, T (stopped), ...
func (p *proc) state() string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return ""
	}
	// pid (comm) state ...: comm may hold spaces, so look after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return ""
	}
	return string(b[i+2])
}

// wait waits at most d for the process to exit and returns its exit code
// (-1 when a signal ended it).
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("echo %s still running after %s", p.id, d)
	}
	return 0
}

// session starts a session with pool echo once it has want members.
func (e *env) session(want int, opts ...rspclient.SessionOption) *rspclient.Session {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.pu.NewSession(ctx, "echo", opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(s.Close)
	waitFor(e.t, 10*time.Second, fmt.Sprintf("%d PEs in the session's cache", want), func() bool { return s.Cache().Len() == want })
	return s
}

// resolves tells whether a resolution of pool echo returns PE id.
func (e *env) resolves(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ans, err := e.pu.Resolve(ctx, "echo", events.ResolveRequest{Max: events.MaxMax})
	var ee *events.Error
	if errors.As(err, &ee) && ee.Code == events.CodeNotFound {
		return false
	}
	if err != nil {
		e.t.Errorf("resolve: %v", err)
		return true
	}
	for _, el := range ans.Elements {
		if el.PEID == id {
			return true
		}
	}
	return false
}

// waitFor polls cond every 10 ms until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func request(t *testing.T, s *rspclient.Session, data string) *rspclient.Reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := s.Request(ctx, []byte(data))
	if err != nil {
		t.Fatalf("request %q: %v", data, err)
	}
	if string(r.Data) != data {
		t.Fatalf("reply %q from %s, want %q", r.Data, r.PEID, data)
	}
	return r
}

func cookieN(t *testing.T, r *rspclient.Reply) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimPrefix(r.Cookie, "n="))
	if err != nil || !strings.HasPrefix(r.Cookie, "n=") {
		t.Fatalf("cookie %q from %s is not n=<count>", r.Cookie, r.PEID)
	}
	return n
}

// TestKillFailover: kill -9 of the PE a session streams requests to
// (200, 5 ms apart) fails no request; the session goes on at another PE
// with its cookie, and reports the dead PE; the name server takes it out
// of resolution (its own check of the reported PE finds no responders, or
// in operator mode the connection's close, or at the latest its lifetime).
func TestKillFailover(t *testing.T) {
	modes(t, func(t *testing.T, e *env, secure bool) {
		lifetime := "1s"
		if secure { // long: what takes the PE out is not its expiry
			lifetime = "5s"
		}
		procs := map[string]*proc{}
		for _, id := range []string{"e1", "e2", "e3"} {
			procs[id] = e.startEcho(id, "--lifetime", lifetime)
		}
		s := e.session(3, rspclient.WithAttemptTimeout(500*time.Millisecond))

		type result struct {
			pe   string
			n    int
			took time.Duration
			err  error
		}
		const total, killAt = 200, 50
		results := make([]result, 0, total)
		var (
			victim   string
			killedAt time.Time
			g        *gone
		)
		for i := range total {
			if i == killAt {
				victim = s.PE()
				g = e.follow(victim)
				killedAt = time.Now()
				procs[victim].signal(t, syscall.SIGKILL)
			}
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r, err := s.Request(ctx, []byte("req-"+strconv.Itoa(i)))
			cancel()
			res := result{took: time.Since(start), err: err}
			if err == nil {
				res.pe = r.PEID
				res.n, _ = strconv.Atoi(strings.TrimPrefix(r.Cookie, "n="))
				if string(r.Data) != "req-"+strconv.Itoa(i) {
					res.err = fmt.Errorf("reply %q", r.Data)
				}
			}
			results = append(results, res)
			time.Sleep(5 * time.Millisecond)
		}
		var slowest time.Duration
		for i, r := range results {
			if r.err != nil {
				t.Errorf("request %d failed: %v", i, r.err)
				continue
			}
			if r.n != i+1 {
				t.Errorf("request %d: cookie n=%d, want %d (the count must survive the failover)", i, r.n, i+1)
			}
			if i < killAt && r.pe != victim || i >= killAt && r.pe == victim {
				t.Errorf("request %d answered by %s (victim %s killed before request %d)", i, r.pe, victim, killAt)
			}
			slowest = max(slowest, r.took)
		}
		reason, removed, gone := g.wait(10*time.Second, killedAt)
		if code := procs[victim].wait(t, 5*time.Second); code != -1 {
			t.Errorf("killed echo exited %d", code)
		}
		t.Logf("kill -9 of %s: no request of %d failed; the first after the kill took %s, the slowest %s; "+
			"removed (%s) %s after the kill, not resolved any more after %s (lifetime %s)",
			victim, total, results[killAt].took.Round(time.Microsecond), slowest.Round(time.Microsecond),
			reason, removed.Round(time.Millisecond), gone.Round(time.Millisecond), lifetime)
		if secure && gone > time.Second {
			t.Errorf("in operator mode the killed PE was resolved for %s, want < 1s", gone)
		}
	})
}

// TestKillIdlePE: a PE killed while no session uses it (so nobody reports
// it) leaves resolution at the end of its lifetime in insecure mode, and
// in operator mode once the name server saw its connection close (grace
// 250 ms), long before its lifetime (5 s).
func TestKillIdlePE(t *testing.T) {
	modes(t, func(t *testing.T, e *env, secure bool) {
		lifetime, want := "1s", events.ReasonExpired
		if secure {
			lifetime, want = "5s", events.ReasonDisconnected
		}
		p := e.startEcho("a", "--lifetime", lifetime)
		e.startEcho("b", "--lifetime", lifetime)
		waitFor(t, 5*time.Second, "a resolved", func() bool { return e.resolves("a") })
		g := e.follow("a")
		killedAt := time.Now()
		p.signal(t, syscall.SIGKILL)
		reason, removed, gone := g.wait(10*time.Second, killedAt)
		t.Logf("kill -9 of an idle PE: removed (%s) %s after the kill, not resolved any more after %s (lifetime %s)",
			reason, removed.Round(time.Millisecond), gone.Round(time.Millisecond), lifetime)
		if reason != want {
			t.Errorf("removed for %q, want %q", reason, want)
		}
		if secure && gone > time.Second {
			t.Errorf("in operator mode the killed PE was resolved for %s, want < 1s", gone)
		}
		if !e.resolves("b") {
			t.Error("b is gone too")
		}
	})
}

// TestStoppedPE: a PE that hangs (SIGSTOP) keeps its connection, so only
// its lifetime (1 s) runs out — unless a session stuck to it, which fails
// over after its attempt timeout, reports it and the name server's own
// check finds it does not answer.
func TestStoppedPE(t *testing.T) {
	stop := func(t *testing.T, p *proc) time.Time {
		t.Helper()
		at := time.Now()
		p.signal(t, syscall.SIGSTOP)
		t.Cleanup(func() { _ = p.cmd.Process.Signal(syscall.SIGCONT) })
		// The signal is delivered when the process next runs on its CPU.
		waitFor(t, 5*time.Second, p.id+" stopped", func() bool { return p.state() == "T" })
		return at
	}
	t.Run("idle", func(t *testing.T) {
		e := newEnv(t)
		a := e.startEcho("a")
		e.startEcho("b")
		waitFor(t, 5*time.Second, "a resolved", func() bool { return e.resolves("a") })
		g := e.follow("a")
		stoppedAt := stop(t, a)
		reason, removed, gone := g.wait(10*time.Second, stoppedAt)
		if reason != events.ReasonExpired || gone > 3*time.Second {
			t.Errorf("stopped PE removed (%s), not resolved after %s; want expired after about its lifetime (1s)", reason, gone)
		}
		t.Logf("SIGSTOP of an idle PE: removed (%s) %s after the stop, not resolved any more after %s (lifetime 1s)",
			reason, removed.Round(time.Millisecond), gone.Round(time.Millisecond))
	})
	t.Run("session", func(t *testing.T) {
		e := newEnv(t)
		a := e.startEcho("a")
		e.startEcho("b")
		s := e.session(2, rspclient.WithAffinity("a"), rspclient.WithAttemptTimeout(300*time.Millisecond))
		if r := request(t, s, "x"); r.PEID != "a" {
			t.Fatalf("first reply from %s, want a", r.PEID)
		}
		g := e.follow("a")
		stoppedAt := stop(t, a)
		r := request(t, s, "y")
		failover := time.Since(stoppedAt)
		if r.PEID != "b" || cookieN(t, r) != 2 {
			t.Fatalf("reply from %s cookie %q, want b with n=2", r.PEID, r.Cookie)
		}
		reason, removed, gone := g.wait(10*time.Second, stoppedAt)
		if gone > 3*time.Second {
			t.Errorf("stopped PE resolved for %s, want at most about its lifetime (1s)", gone)
		}
		t.Logf("SIGSTOP of a session's PE: the session failed over in %s (attempt timeout 300ms); "+
			"removed (%s) %s after the stop, not resolved any more after %s (lifetime 1s)",
			failover.Round(time.Millisecond), reason, removed.Round(time.Millisecond), gone.Round(time.Millisecond))
	})
}

// TestDrain: after SIGTERM a PE deregisters at once but keeps serving the
// session that stays with it; new sessions go elsewhere; it exits 0 once
// the session has been idle for --idle; the session then fails over with
// its cookie.
func TestDrain(t *testing.T) {
	e := newEnv(t)
	a := e.startEcho("a", "--drain-timeout", "20s")
	e.startEcho("b")
	s := e.session(2, rspclient.WithAffinity("a"))
	n := 0
	for range 3 {
		r := request(t, s, "x")
		n++
		if r.PEID != "a" || cookieN(t, r) != n {
			t.Fatalf("reply from %s cookie %q, want a with n=%d", r.PEID, r.Cookie, n)
		}
	}

	termAt := time.Now()
	a.signal(t, syscall.SIGTERM)
	var other *rspclient.Session
	var lastRequest time.Time
	// Requests every 100 ms for 2 s: more than the idle period (1 s) in
	// all, never idle that long.
	for time.Since(termAt) < 2*time.Second {
		r := request(t, s, "x")
		lastRequest = time.Now()
		n++
		if r.PEID != "a" || cookieN(t, r) != n {
			t.Fatalf("while draining, %s after SIGTERM: reply from %s cookie %q, want a with n=%d",
				time.Since(termAt), r.PEID, r.Cookie, n)
		}
		if other == nil && !e.resolves("a") {
			t.Logf("a gone from resolution %s after SIGTERM", time.Since(termAt).Round(time.Millisecond))
			other = e.session(1)
			for range 3 {
				if r := request(t, other, "new"); r.PEID != "b" {
					t.Fatalf("a new session was served by %s, want b", r.PEID)
				}
			}
		}
		select {
		case <-a.done:
			t.Fatalf("a exited %s after SIGTERM while its session was active", time.Since(termAt))
		default:
		}
		time.Sleep(100 * time.Millisecond)
	}
	if other == nil {
		t.Fatal("a still resolved 2s after SIGTERM")
	}
	code := a.wait(t, 10*time.Second)
	exited := time.Since(lastRequest)
	if code != 0 {
		t.Fatalf("a exited %d after draining, want 0", code)
	}
	if exited < time.Second {
		t.Errorf("a exited %s after the session's last request, before the idle period (1s)", exited)
	}
	if !strings.Contains(a.stderr.String(), "drained") {
		t.Errorf("a did not log drained: %s", a.stderr.String())
	}
	r := request(t, s, "x")
	n++
	if r.PEID != "b" || cookieN(t, r) != n {
		t.Fatalf("after a exited: reply from %s cookie %q, want b with n=%d", r.PEID, r.Cookie, n)
	}
	t.Logf("drain: a served its session for %s after SIGTERM and exited 0 %s after the last request (idle 1s)",
		lastRequest.Sub(termAt).Round(time.Millisecond), exited.Round(time.Millisecond))
}

// TestCookieHandoff: the PE a session fails over to gets the session's
// last cookie and continues the count.
func TestCookieHandoff(t *testing.T) {
	e := newEnv(t)
	a := e.startEcho("a")
	b := e.startEcho("b")
	s := e.session(2, rspclient.WithAffinity("a"))
	for i := 1; i <= 3; i++ {
		if r := request(t, s, "x"); r.PEID != "a" || cookieN(t, r) != i {
			t.Fatalf("reply from %s cookie %q, want a with n=%d", r.PEID, r.Cookie, i)
		}
	}
	a.signal(t, syscall.SIGKILL)
	a.wait(t, 5*time.Second)
	r := request(t, s, "x")
	if r.PEID != "b" || cookieN(t, r) != 4 {
		t.Fatalf("after a died: reply from %s cookie %q, want b with n=4", r.PEID, r.Cookie)
	}
	if r := request(t, s, "x"); r.PEID != "b" || cookieN(t, r) != 5 {
		t.Fatalf("reply from %s cookie %q, want b with n=5", r.PEID, r.Cookie)
	}
	waitFor(t, 5*time.Second, "b logs the takeover", func() bool {
		return strings.Contains(b.stderr.String(), "session taken over from its cookie") &&
			strings.Contains(b.stderr.String(), "session="+s.ID()+" n=3")
	})
}

// TestOutlivesNameServerOutage: echo keeps serving and renewing through a
// name-server outage of five lifetimes, logs that renewals fail and that
// its lifetime ran out, does not exit, and is registered again (logged)
// once a name server runs; SIGTERM then drains it and it exits 0. Another
// key's echo with the same PE id is refused for good: it exits 1 at once,
// naming the refusal.
func TestOutlivesNameServerOutage(t *testing.T) {
	e := newEnv(t)
	a := e.startEcho("a", "--timeout", "500ms")
	waitFor(t, 5*time.Second, "a resolved", func() bool { return e.resolves("a") })

	e.ns.Stop()
	waitFor(t, 3*time.Second, "a logs failing renewals and its lifetime running out", func() bool {
		return strings.Contains(a.stderr.String(), "renewal failed: retrying") &&
			strings.Contains(a.stderr.String(), "lifetime ran out unrenewed")
	})
	select {
	case <-a.done:
		t.Fatalf("echo exited %d during the outage", a.cmd.ProcessState.ExitCode())
	case <-time.After(4 * time.Second):
	}
	if strings.Contains(a.stderr.String(), "registered again") {
		t.Fatal("registered again while no name server ran")
	}
	nstest.StartNameServer(t, e.s, server.Config{})
	waitFor(t, 5*time.Second, "a logs that it is registered again", func() bool {
		return strings.Contains(a.stderr.String(), "registered again")
	})
	if r := request(t, e.session(1), "x"); r.PEID != "a" {
		t.Errorf("reply from %s, want a", r.PEID)
	}

	thief := exec.Command(echoBin, "--nats", e.url, "--id", "a", "--key", filepath.Join(e.dir, "thief.nk"), "--data", e.data)
	thief.Env = append(os.Environ(), "RSP_SCOPE=", "RSP_CREDS=", "RSP_NATS=")
	out, err := thief.CombinedOutput()
	refused := bytes.Contains(out, []byte(events.CodeForbidden)) || bytes.Contains(out, []byte(events.CodeConflict))
	if code := thief.ProcessState.ExitCode(); code != 1 || !refused {
		t.Errorf("echo with another key's PE id: exit %d (%v), output %q; want 1, forbidden or conflict", code, err, out)
	}

	a.signal(t, syscall.SIGTERM)
	if code := a.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
}

// TestHelpAndFlags: --help explains; bad flags fail.
func TestHelpAndFlags(t *testing.T) {
	out, err := exec.Command(echoBin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v: %s", err, out)
	}
	for _, want := range []string{"Rsp-Cookie", "SIGTERM", "--drain-timeout", "--pool", "pe.creds", "rsp.<scope>.svc.<pool>.<pe_id>"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("--help does not mention %s", want)
		}
	}
	cmd := exec.Command(echoBin, "--pool", "bad pool")
	cmd.Env = append(os.Environ(), "RSP_NATS=nats://127.0.0.1:1")
	if out, err := cmd.CombinedOutput(); err == nil || !bytes.Contains(out, []byte("pool")) {
		t.Errorf("bad pool: %v: %s", err, out)
	}
}
