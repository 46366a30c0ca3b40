package main

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestBinary builds the gateway, runs it against a real NATS server and
// name server, asks it like curl would, and stops it with SIGTERM.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool:", err)
	}
	bin := filepath.Join(t.TempDir(), "gateway")
	build := exec.Command(goBin, "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	s := nstest.StartNATS(t)
	nstest.StartNameServer(t, s, server.Config{})
	register(t, s, "echo", "p1", "p2")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--listen", "127.0.0.1:0", "--scope", "default",
		"--data", t.TempDir(), "--timeout", "3s", "--log-level", "debug")
	// Flags win over the environment; the environment fills in the rest.
	cmd.Env = append(os.Environ(), "RSP_NATS="+s.ClientURL(), "RSP_LISTEN=127.0.0.1:1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 2)
	defer func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited: // stderr is complete once Wait returned
		case <-time.After(10 * time.Second):
		}
		if t.Failed() {
			t.Logf("gateway stderr:\n%s", stderr.String())
		}
	}()
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // only the first line matters
			}
		}
		close(lines)
		err := cmd.Wait()
		exited <- err
		exited <- err // once for the test, once for the deferred cleanup
	}()
	var base string
	select {
	case line, ok := <-lines:
		var found bool
		if base, found = strings.CutPrefix(line, "rsp gateway listening on "); !ok || !found {
			t.Fatalf("first line %q, want the listen address", line)
		}
	case <-ctx.Done():
		t.Fatal("gateway did not start")
	}

	status, ans := get(t, base, "/v1/scopes/default/pools/echo?max=2")
	if got := ids(ans); status != http.StatusOK || len(got) != 2 {
		t.Fatalf("resolve = %d %v %+v", status, got, ans.Error)
	}
	status, ans = get(t, base, "/v1/scopes/default/pools/nosuch")
	wantError(t, "nosuch", status, ans, http.StatusNotFound, events.CodeNotFound, "nosuch")
	status, ans = get(t, base, "/v1/scopes/default/pools/echo?max=500")
	wantError(t, "max=500", status, ans, http.StatusBadRequest, events.CodeBadRequest, "max")
	status, ans = get(t, base, "/v1/scopes/elsewhere/pools/echo")
	wantError(t, "elsewhere", status, ans, http.StatusNotFound, events.CodeNotFound, "elsewhere")
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz = %d", resp.StatusCode)
	}
	resp, err = http.Post(base+"/v1/scopes/default/pools/echo", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST = %d, want 405", resp.StatusCode)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("gateway did not stop on SIGTERM")
	}
	if log := stderr.String(); !strings.Contains(log, "level=DEBUG msg=http") || !strings.Contains(log, "status=404") {
		t.Fatalf("no debug access log:\n%s", log)
	}
}
