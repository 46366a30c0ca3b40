package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// rspBin and nsBin are the rsp and nameserver binaries, built once for all
// tests.
var rspBin, nsBin string

func TestMain(m *testing.M) {
	nstest.RunWithBinaries(m,
		nstest.Binary{Name: "rsp", Pkg: ".", Path: &rspBin},
		nstest.Binary{Name: "nameserver", Pkg: "../../services/nameserver", Path: &nsBin})
}

// env is a test's world: a NATS server, maybe a name server, and a key dir.
type env struct {
	t   *testing.T
	url string
	dir string
	s   *natsserver.Server
}

func newEnv(t *testing.T, withNameServer bool) *env {
	t.Helper()
	s := nstest.StartNATS(t)
	e := &env{t: t, url: s.ClientURL(), dir: t.TempDir(), s: s}
	if withNameServer {
		nstest.StartNameServer(t, s, server.Config{})
	}
	return e
}

// cmd makes an rsp command against this env, with a key file in the
// test's dir unless args name another.
func (e *env) cmd(args ...string) *exec.Cmd {
	c := exec.Command(rspBin, args...)
	c.Env = append(os.Environ(),
		"RSP_NATS="+e.url,
		"RSP_KEY="+filepath.Join(e.dir, "user.nk"),
		"RSP_DATA="+filepath.Join(e.dir, "data"),
		"RSP_SCOPE=",
	)
	return c
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs rsp to its end (at most 30 s).
func (e *env) run(args ...string) result {
	e.t.Helper()
	return runCmd(e.t, e.cmd(args...))
}

func runCmd(t *testing.T, c *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = c.Process.Kill()
		<-done
		t.Fatalf("rsp %v did not end within 30s; stderr: %s", c.Args[1:], errb.String())
	}
	return result{code: c.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
}

// wantFail checks an exit code and a one-line "rsp: ..." reason containing
// each of words.
func wantFail(t *testing.T, r result, code int, words ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit %d, want %d; stderr %q", r.code, code, r.stderr)
	}
	line := strings.TrimSuffix(r.stderr, "\n")
	if strings.Contains(line, "\n") || !strings.HasPrefix(line, "rsp: ") {
		t.Errorf("stderr %q is not one line starting with \"rsp: \"", r.stderr)
	}
	for _, w := range words {
		if !strings.Contains(line, w) {
			t.Errorf("stderr %q does not say %q", line, w)
		}
	}
}

func TestHelp(t *testing.T) {
	e := &env{t: t, url: "nats://127.0.0.1:1", dir: t.TempDir()}
	r := e.run("--help")
	if r.code != 0 || !strings.Contains(r.stdout, "register") || !strings.Contains(r.stdout, "Example") {
		t.Errorf("rsp --help: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	for _, c := range []string{"register", "deregister", "resolve", "watch", "pools", "report", "call"} {
		r := e.run(c, "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "rsp "+c) {
			t.Errorf("rsp %s --help: exit %d, stdout %q, stderr %q", c, r.code, r.stdout, r.stderr)
		}
	}
	if r := e.run(); r.code != 0 || !strings.Contains(r.stdout, "Available Commands") {
		t.Errorf("rsp alone: exit %d, stdout %q", r.code, r.stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	e := &env{t: t, url: "nats://127.0.0.1:1", dir: t.TempDir()}
	wantFail(t, e.run("bogus"), 2, "unknown command", "bogus")
	wantFail(t, e.run("regster"), 2, `did you mean "register"`)
	wantFail(t, e.run("--bogus"), 2, "unknown flag")
	wantFail(t, e.run("resolve"), 2, "POOL")
	wantFail(t, e.run("deregister", "echo"), 2, "POOL PE_ID")
	wantFail(t, e.run("pools", "extra"), 2, "no arguments")
	wantFail(t, e.run("resolve", "bad.pool"), 2, "pool")
	wantFail(t, e.run("deregister", "echo", "bad id"), 2, "pe_id")
	wantFail(t, e.run("register", "echo"), 2, "--addr")
	wantFail(t, e.run("register", "echo", "--addr", "nocolon"), 2, "PROTO:ADDR")
	wantFail(t, e.run("register", "echo", "--addr", "tcp:nohost"), 2, "transports[0].addr")
	wantFail(t, e.run("register", "echo", "--addr", "tcp:h:1", "--meta", "novalue"), 2, "KEY=VALUE")
	wantFail(t, e.run("register", "echo", "--addr", "tcp:h:1", "--load", "2"), 2, "policy.load")
	wantFail(t, e.run("resolve", "echo", "--max", "x"), 2, "--max")
	wantFail(t, e.run("--timeout", "0s", "pools"), 2, "--timeout")
	wantFail(t, e.run("--scope", "Bad.Scope", "pools"), 2, "scope")
	// Not a usage error: nothing listens there.
	wantFail(t, e.run("resolve", "echo"), 1, "connect")
}

func TestResolveWithoutNameServer(t *testing.T) {
	e := newEnv(t, false)
	wantFail(t, e.run("resolve", "echo"), 1, "no name server")
	// Pools are read through the name servers too.
	wantFail(t, e.run("pools", "--json"), 1, "no name server")
}

func TestResolveUnknownPool(t *testing.T) {
	e := newEnv(t, true)
	wantFail(t, e.run("resolve", "nosuchpool"), 1, "not_found")
}

// proc is a long-running rsp (register, watch) whose stdout is read line by
// line.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string
	stderr *bytes.Buffer
	done   chan struct{}
}

func (e *env) start(args ...string) *proc {
	e.t.Helper()
	return startCmd(e.t, e.cmd(args...))
}

func startCmd(t *testing.T, c *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, cmd: c, lines: make(chan string, 100), stderr: &bytes.Buffer{}, done: make(chan struct{})}
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.Stderr = p.stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		_ = c.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = c.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) line() string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.done
			p.t.Fatalf("rsp %v ended (exit %d) before printing; stderr %q", p.cmd.Args[1:], p.cmd.ProcessState.ExitCode(), p.stderr.String())
		}
		return l
	case <-time.After(10 * time.Second):
		p.t.Fatalf("rsp %v printed nothing within 10s", p.cmd.Args[1:])
	}
	return ""
}

func (p *proc) stop(sig os.Signal) int {
	p.t.Helper()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Fatalf("rsp %v did not stop after %v", p.cmd.Args[1:], sig)
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.t.Fatalf("rsp %v did not end", p.cmd.Args[1:])
	}
	return p.cmd.ProcessState.ExitCode()
}

func TestRegisterResolveWatchDeregister(t *testing.T) {
	e := newEnv(t, true)

	// A live address: the name server's check of the PE reported below
	// passes, so it stays until it deregisters.
	addr := liveAddr(t)
	reg := e.start("register", "echo", "--addr", "tcp:"+addr, "--addr", "nats:svc.echo",
		"--id", "echo-1", "--lifetime", "1s", "--meta", "zone=a")
	if l := reg.line(); l != "echo-1 registered in pool echo" {
		t.Fatalf("register printed %q", l)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "user.nk")); err != nil {
		t.Errorf("key file not created: %v", err)
	}

	watch := e.start("watch", "echo", "--json")
	var ch events.Change
	if err := json.Unmarshal([]byte(watch.line()), &ch); err != nil || ch.Op != "add" || ch.PEID != "echo-1" {
		t.Fatalf("first watch line: %+v %v", ch, err)
	}
	plain := e.start("watch", "echo")
	if l := plain.line(); !strings.HasPrefix(l, "add echo-1 registered rev=") || !strings.HasSuffix(l, " tcp:"+addr+",nats:svc.echo") {
		t.Errorf("watch line %q", l)
	}

	// Renewals keep a 1 s registration alive.
	time.Sleep(2500 * time.Millisecond)

	r := e.run("resolve", "echo")
	if r.code != 0 || !strings.Contains(r.stdout, "PE_ID") || !strings.Contains(r.stdout, "echo-1") ||
		!strings.Contains(r.stdout, "tcp:"+addr+",nats:svc.echo") || !strings.Contains(r.stdout, "round_robin") {
		t.Errorf("resolve: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = e.run("resolve", "echo", "--json", "--max", "2", "--exclude", "other", "--affinity", "echo-1")
	var ans events.ResolveAnswer
	if err := json.Unmarshal([]byte(r.stdout), &ans); err != nil || len(ans.Elements) != 1 || ans.Elements[0].Meta["zone"] != "a" {
		t.Errorf("resolve --json: %q (%v), stderr %q", r.stdout, err, r.stderr)
	}
	r = e.run("pools")
	if r.code != 0 || !strings.Contains(r.stdout, "SIGNER") || !strings.Contains(r.stdout, "echo-1") {
		t.Errorf("pools: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = e.run("pools", "--json")
	var recs []events.Record
	if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil || len(recs) != 1 || recs[0].PEID != "echo-1" {
		t.Errorf("pools --json: %q (%v)", r.stdout, err)
	}

	// Someone else's key may not take the PE id.
	other := e.cmd("register", "echo", "--addr", "tcp:127.0.0.1:7002", "--id", "echo-1")
	other.Env = append(other.Env, "RSP_KEY="+filepath.Join(t.TempDir(), "other.nk"))
	wantFail(t, runCmd(t, other), 1, "echo-1")

	if r := e.run("report", "echo", "echo-1", "--reason", "test"); r.code != 0 || r.stdout != "echo-1 reported\n" {
		t.Errorf("report: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}

	// SIGINT: deregister and exit 0.
	if code := reg.stop(os.Interrupt); code != 0 {
		t.Errorf("register exit %d after SIGINT, want 0; stderr %q", code, reg.stderr.String())
	}
	if l := reg.line(); l != "echo-1 deregistered" {
		t.Errorf("register printed %q at the end", l)
	}
	if err := json.Unmarshal([]byte(watch.line()), &ch); err != nil || ch.Op != "remove" || ch.PEID != "echo-1" || ch.Reason != "deregistered" {
		t.Errorf("watch after deregistration: %+v %v", ch, err)
	}
	if l := plain.line(); !strings.HasPrefix(l, "remove echo-1 deregistered") {
		t.Errorf("watch line %q", l)
	}
	if code := watch.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("watch exit %d after SIGTERM; stderr %q", code, watch.stderr.String())
	}
	wantFail(t, e.run("resolve", "echo"), 1, "not_found")
}

func TestDeregisterFromAnotherProcess(t *testing.T) {
	e := newEnv(t, true)
	reg := e.start("register", "echo", "--addr", "tcp:127.0.0.1:7001", "--id", "p2", "--lifetime", "30s")
	if l := reg.line(); !strings.HasPrefix(l, "p2 registered") {
		t.Fatalf("register printed %q", l)
	}
	// The process dies without deregistering; its PE lives on for 30 s.
	_ = reg.cmd.Process.Kill()
	reg.wait()
	if r := e.run("resolve", "echo"); r.code != 0 || !strings.Contains(r.stdout, "p2") {
		t.Fatalf("resolve: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	// Another key may not deregister it; the same key file may.
	other := e.cmd("deregister", "echo", "p2")
	other.Env = append(other.Env, "RSP_KEY="+filepath.Join(t.TempDir(), "other.nk"))
	if r := runCmd(t, other); r.code == 0 {
		t.Error("another key deregistered p2")
	}
	if r := e.run("deregister", "echo", "p2"); r.code != 0 || r.stdout != "p2 deregistered\n" {
		t.Fatalf("deregister: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	wantFail(t, e.run("resolve", "echo"), 1, "not_found")
}

// TestRegisterOutlivesNameServerOutages: rsp register started while no
// name server runs keeps trying and registers once one runs; through an
// outage of five lifetimes it says it is retrying, then lost, does not
// exit, and registers again when a name server is back; SIGTERM then
// deregisters it and it exits 0.
func TestRegisterOutlivesNameServerOutages(t *testing.T) {
	s := nstest.StartNATS(t)
	e := &env{t: t, url: s.ClientURL(), dir: t.TempDir(), s: s}
	reg := e.start("--timeout", "500ms", "register", "echo", "--addr", "tcp:127.0.0.1:7001", "--id", "p3", "--lifetime", "1s")
	wantLine(t, reg, "p3 retrying: ")
	ns := nstest.StartNameServer(t, s, server.Config{})
	wantLine(t, reg, "p3 registered in pool echo")

	ns.Stop()
	wantLine(t, reg, "p3 retrying: ")
	wantLine(t, reg, "p3 lost: ")
	select {
	case l := <-reg.lines:
		t.Fatalf("register printed %q during the outage", l)
	case <-reg.done:
		t.Fatalf("register exited %d during the outage; stderr %q", reg.cmd.ProcessState.ExitCode(), reg.stderr.String())
	case <-time.After(4 * time.Second):
	}

	nstest.StartNameServer(t, s, server.Config{})
	wantLine(t, reg, "p3 registered again in pool echo")
	if r := e.run("resolve", "echo"); r.code != 0 || !strings.Contains(r.stdout, "p3") {
		t.Errorf("resolve: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if code := reg.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0; stderr %q", code, reg.stderr.String())
	}
	wantLine(t, reg, "p3 deregistered")
}

// TestRegisterInterruptedBeforeRegistered: SIGINT while no registration
// got through ends rsp register with 0, and a note that the PE could not
// be deregistered.
func TestRegisterInterruptedBeforeRegistered(t *testing.T) {
	e := newEnv(t, false)
	reg := e.start("--timeout", "500ms", "register", "echo", "--addr", "tcp:127.0.0.1:7001", "--id", "p4")
	wantLine(t, reg, "p4 retrying: ")
	if code := reg.stop(os.Interrupt); code != 0 {
		t.Errorf("exit %d after SIGINT, want 0; stderr %q", code, reg.stderr.String())
	}
	if !strings.Contains(reg.stderr.String(), "p4 not deregistered") {
		t.Errorf("stderr %q does not say p4 was not deregistered", reg.stderr.String())
	}
}

// wantLine reads p's next line and fails the test unless it starts with
// prefix.
func wantLine(t *testing.T, p *proc, prefix string) {
	t.Helper()
	if l := p.line(); !strings.HasPrefix(l, prefix) {
		t.Fatalf("rsp printed %q, want %q...", l, prefix)
	}
}

// TestRegisterWaitsForNATS: rsp register started while no NATS server
// listens keeps trying to connect (a PE waits for NATS as for the name
// servers) and registers once a server and a name server are up.
func TestRegisterWaitsForNATS(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	e := &env{t: t, url: "nats://" + addr, dir: t.TempDir()}
	reg := e.start("--timeout", "500ms", "register", "echo", "--addr", "tcp:127.0.0.1:7001", "--id", "p5")
	select {
	case <-reg.done:
		t.Fatalf("register exited %d with no NATS server; stderr %q", reg.cmd.ProcessState.ExitCode(), reg.stderr.String())
	case l := <-reg.lines:
		t.Fatalf("register printed %q with no NATS server", l)
	case <-time.After(2 * time.Second):
	}
	s, err := embedded.Start(embedded.Config{Listen: addr, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	e.s = s
	nstest.StartNameServer(t, s, server.Config{})
	wantLine(t, reg, "p5 registered in pool echo")
	if code := reg.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0; stderr %q", code, reg.stderr.String())
	}
}
