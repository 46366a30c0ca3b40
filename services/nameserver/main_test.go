package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
)

// TestBinary builds the name server and runs it as a real process: it must
// start its embedded NATS in operator mode, refuse anonymous connections,
// print the client URL, answer resolutions of each scope to that scope's
// users, and exit 0 on SIGTERM.
func TestBinary(t *testing.T) {
	data := t.TempDir()
	cmd, url := startBinary(t, "--listen", "127.0.0.1:0", "--data", data, "--scope", "default", "--scope", "lab")
	if nc, err := nats.Connect(url, nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("anonymous connection accepted")
	}
	for _, scope := range []string{"default", "lab"} {
		nc, err := nats.Connect(url, natsconn.Creds(credsOf(data, scope, "pu")))
		if err != nil {
			t.Fatalf("scope %s: %v", scope, err)
		}
		defer nc.Close()
		m, err := nc.Request(events.Subject(scope, events.KindResolve, "nothing"), nil, 5*time.Second)
		if err != nil {
			t.Fatalf("scope %s: %v", scope, err)
		}
		if !strings.Contains(string(m.Data), `"not_found"`) {
			t.Fatalf("scope %s: %s", scope, m.Data)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "jetstream")); err != nil {
		t.Fatalf("no JetStream store under --data: %v", err)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("did not exit within 15s of SIGTERM")
	}
}

// nsBin and rspBin are the name server and the CLI, built once for all
// tests.
var nsBin, rspBin string

func TestMain(m *testing.M) {
	nstest.RunWithBinaries(m, nstest.Binary{Name: "nameserver", Pkg: ".", Path: &nsBin},
		nstest.Binary{Name: "rsp", Pkg: "../../clients/rsp", Path: &rspBin})
}

func credsOf(data, scope, role string) string {
	return filepath.Join(data, "auth", "creds", scope, role+".creds")
}

// TestInsecure keeps the open mode for experiments.
func TestInsecure(t *testing.T) {
	_, url := startBinary(t, "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--insecure")
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	m, err := nc.Request("rsp.default.resolve.echo", nil, 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), "not_found") {
		t.Fatalf("resolution: %v", err)
	}
}

// startBinary starts the name server with args; it returns the process
// and the client URL it printed.
func startBinary(t *testing.T, args ...string) (*exec.Cmd, string) {
	t.Helper()
	p := startProcess(t, args...)
	return p.cmd, p.natsURL
}

// process is a running name server and the URLs its banner printed.
type process struct {
	cmd     *exec.Cmd
	natsURL string
	pageURL string // with --metrics
}

// startProcess starts the name server with args and reads its banner.
func startProcess(t *testing.T, args ...string) process {
	t.Helper()
	var stderr io.Writer = os.Stderr
	if !testing.Verbose() {
		stderr = io.Discard
	}
	return startProcessLogging(t, stderr, args...)
}

// startProcessLogging is startProcess with the name server's log (its
// stderr) going to stderr.
func startProcessLogging(t *testing.T, stderr io.Writer, args ...string) process {
	t.Helper()
	cmd := exec.Command(nsBin, args...)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urlLine := regexp.MustCompile(`NATS client URL: ((?:nats|tls)://\S+)`)
	pageLine := regexp.MustCompile(`Pool page: (http://\S+)`)
	found := make(chan process, 1)
	go func() {
		p := process{cmd: cmd}
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := urlLine.FindStringSubmatch(sc.Text()); m != nil {
				p.natsURL = m[1]
			}
			if m := pageLine.FindStringSubmatch(sc.Text()); m != nil {
				p.pageURL = m[1]
			}
			if strings.HasPrefix(sc.Text(), "Stop with Ctrl-C") {
				found <- p
			}
		}
	}()
	select {
	case p := <-found:
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return p
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("no banner printed within 30s")
	}
	return process{}
}

// TestTLS runs the name server with certificates from a fresh CA and
// resolves over TLS; with --tls-ca, clients must also show a certificate.
func TestTLS(t *testing.T) {
	pki := nstest.NewPKI(t)
	data := t.TempDir()
	pu := natsconn.Creds(credsOf(data, "default", "pu"))
	_, url := startBinary(t, "--listen", "127.0.0.1:0", "--data", data, "--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey)
	if _, err := nats.Connect(url, pu, nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("plain connection accepted by a TLS server")
	}
	tlsc, err := natsconn.TLSFiles(pki.CA, "", "")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, pu, nats.Secure(tlsc))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if !nc.TLSRequired() {
		t.Fatal("connection is not TLS")
	}
	m, err := nc.Request("rsp.default.resolve.echo", nil, 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), "not_found") {
		t.Fatalf("resolution over TLS: %v %s", err, m.Data)
	}

	data = t.TempDir()
	pu = natsconn.Creds(credsOf(data, "default", "pu"))
	_, url = startBinary(t, "--listen", "127.0.0.1:0", "--data", data, "--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--tls-ca", pki.CA)
	if nc, err := nats.Connect(url, pu, nats.Secure(tlsc), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("client without a certificate accepted with --tls-ca")
	}
	mtls, _ := natsconn.TLSFiles(pki.CA, pki.ClientCert, pki.ClientKey)
	nc2, err := nats.Connect(url, pu, nats.Secure(mtls))
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	m, err = nc2.Request("rsp.default.resolve.echo", nil, 5*time.Second)
	if err != nil || !strings.Contains(string(m.Data), "not_found") {
		t.Fatalf("resolution over mutual TLS: %v", err)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--scope", "Bad Scope"}, {"--listen", "nowhere"}, {"--log-level", "loud"},
		{"--max-bad-pe-reports", "0"}, {"--max-bad-pe-reports", "lab=3"}, {"--report-window", "soon"}, {"--report-window", "default=-1s"}} {
		cmd := command()
		cmd.SetArgs(append(args, "--data", t.TempDir()))
		cmd.SetOut(io.Discard)
		err := cmd.Execute()
		if err == nil {
			t.Fatalf("%v accepted", args)
		}
		if !strings.Contains(err.Error(), strings.TrimPrefix(args[0], "--")) {
			t.Fatalf("%v: error %q does not name the flag", args, err)
		}
	}
}

func TestParseReports(t *testing.T) {
	r, err := parseReports([]string{"5", "lab=2"}, []string{"lab=1m", "30s"}, []string{"default", "lab"})
	if err != nil {
		t.Fatal(err)
	}
	if r.defaults.MaxBadPEReports != 5 || r.defaults.Window != 30*time.Second {
		t.Fatalf("defaults %+v", r.defaults)
	}
	if got := r.forScopes([]string{"lab"})["lab"]; got.MaxBadPEReports != 2 || got.Window != time.Minute {
		t.Fatalf("lab %+v", got)
	}
	if got := r.forScopes([]string{"default"}); len(got) != 0 {
		t.Fatalf("default has overrides %+v", got)
	}
}
