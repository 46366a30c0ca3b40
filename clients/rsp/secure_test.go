package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rserpool/rsp/services/nameserver/nstest"
)

// TestSecureQuickStart runs the name server as its default, secure self
// (operator mode) with TLS, and the CLI as a newcomer would: no --creds,
// the role's credentials found in the data folder; then a PE credential
// for another pool is refused, and a revoked user is shut out without a
// restart.
func TestSecureQuickStart(t *testing.T) {
	pki := nstest.NewPKI(t)
	data := t.TempDir()
	ns := startCmd(t, exec.Command(nsBin, "--listen", "127.0.0.1:0", "--data", data,
		"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey))
	var url string
	for url == "" {
		if l := ns.line(); strings.HasPrefix(l, "NATS client URL: ") {
			url = strings.TrimPrefix(l, "NATS client URL: ")
		}
	}
	if !strings.HasPrefix(url, "tls://") {
		t.Fatalf("URL %s is not TLS", url)
	}
	env := func(extra ...string) []string {
		base := []string{"RSP_NATS=" + url, "RSP_DATA=" + data, "RSP_TLS_CA=" + pki.CA,
			"RSP_KEY=" + filepath.Join(t.TempDir(), "user.nk"), "RSP_SCOPE=", "RSP_CREDS="}
		return append(append(os.Environ(), base...), extra...)
	}
	rsp := func(args ...string) result {
		c := exec.Command(rspBin, append([]string{"--timeout", "3s"}, args...)...)
		c.Env = env()
		return runCmd(t, c)
	}

	reg := exec.Command(rspBin, "register", "echo", "--addr", "tcp:127.0.0.1:7001", "--id", "e1")
	reg.Env = env()
	pe := startCmd(t, reg)
	if l := pe.line(); !strings.Contains(l, "e1 registered") {
		t.Fatalf("register printed %q", l)
	}
	r := rsp("resolve", "echo", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"pe_id":"e1"`) {
		t.Fatalf("resolve over TLS with the pu creds of the data folder: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}

	// Without credentials the server refuses the connection.
	r = rsp("--data", t.TempDir(), "resolve", "echo")
	wantFail(t, r, 1, "uthorization")

	// A PE credential for pool "other" cannot register in "echo".
	other := filepath.Join(t.TempDir(), "other.creds")
	if r := rsp("auth", "user", "--role", "pe", "--pool", "other", "--out", other); r.code != 0 {
		t.Fatalf("auth user: %s", r.stderr)
	}
	r = rsp("--creds", other, "register", "echo", "--addr", "tcp:127.0.0.1:7002", "--id", "e2")
	if r.code == 0 {
		t.Fatalf("a PE of pool other registered in echo: %s", r.stdout)
	}

	// A revoked PU is shut out at once, the name server still running.
	puCreds := filepath.Join(t.TempDir(), "pu.creds")
	r = rsp("auth", "user", "--role", "pu", "--out", puCreds)
	if r.code != 0 {
		t.Fatalf("auth user: %s", r.stderr)
	}
	key := ""
	for _, f := range strings.Fields(r.stdout) {
		if strings.HasPrefix(f, "U") && len(f) == 56 {
			key = f
		}
	}
	if key == "" {
		t.Fatalf("no user key in %q", r.stdout)
	}
	if r := rsp("--creds", puCreds, "resolve", "echo"); r.code != 0 {
		t.Fatalf("new pu cannot resolve: %s", r.stderr)
	}
	if r := rsp("auth", "revoke", key); r.code != 0 {
		t.Fatalf("revoke: %s", r.stderr)
	}
	r = rsp("--creds", puCreds, "resolve", "echo")
	wantFail(t, r, 1)

	if code := pe.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("register exited %d", code)
	}
	if code := ns.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("name server exited %d", code)
	}
}
