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

	"github.com/rserpool/rsp/events"
)

// TestBinary builds the name server and runs it as a real process: it must
// start its embedded NATS, print the client URL, answer resolutions, and
// exit 0 on SIGTERM.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "nameserver")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	data := t.TempDir()
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--data", data, "--scope", "default", "--scope", "lab")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if !testing.Verbose() {
		cmd.Stderr = io.Discard
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	urlLine := regexp.MustCompile(`NATS client URL: (nats://\S+)`)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := urlLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	var url string
	select {
	case url = <-found:
	case <-time.After(30 * time.Second):
		t.Fatal("no client URL printed within 30s")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, scope := range []string{"default", "lab"} {
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

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"--scope", "Bad Scope"}, {"--listen", "nowhere"}, {"--log-level", "loud"}} {
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
