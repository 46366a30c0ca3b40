package local

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClusterScript runs cluster.sh end to end: up (nats-server built with
// go install into a bin folder kept between runs, three nodes, two name
// servers), a PE registered and resolved through the cluster, kill -9 of
// node n1, resolution and registration still working, status, down.
//
// It takes about 30 s once nats-server is built (the first run adds the
// go install: about 80 s in all on an empty build cache). Skip it with
// -short or RSP_CLUSTER_TEST=0.
func TestClusterScript(t *testing.T) {
	if testing.Short() || os.Getenv("RSP_CLUSTER_TEST") == "0" {
		t.Skip("-short or RSP_CLUSTER_TEST=0")
	}
	for _, tool := range []string{"bash", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not on PATH", tool)
		}
	}
	script, err := filepath.Abs("cluster.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(os.TempDir(), "rsp-cluster-test-bin")
	ports := freePorts(t, 11)
	join := func(ps []int) string {
		s := make([]string, len(ps))
		for i, p := range ps {
			s[i] = strconv.Itoa(p)
		}
		return strings.Join(s, " ")
	}
	env := append(os.Environ(),
		"RSP_CLUSTER_DIR="+dir,
		"RSP_CLUSTER_BIN="+bin,
		"RSP_CLUSTER_CLIENT_PORTS="+join(ports[0:3]),
		"RSP_CLUSTER_ROUTE_PORTS="+join(ports[3:6]),
		"RSP_CLUSTER_HTTP_PORTS="+join(ports[6:9]),
		"RSP_CLUSTER_METRICS_PORTS="+join(ports[9:11]),
		"RSP_CLUSTER_TIMEOUT=60",
	)
	run := func(timeout time.Duration, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
		cmd.Env = env
		start := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("cluster.sh %s (%s):\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), out)
		if err != nil {
			t.Fatalf("cluster.sh %s: %v", strings.Join(args, " "), err)
		}
		return string(out)
	}

	t.Cleanup(func() {
		cmd := exec.Command("bash", script, "down")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("cluster.sh down: %v\n%s", err, out)
		}
	})
	out := run(10*time.Minute, "up")
	if !strings.Contains(out, "The cluster runs") {
		t.Fatal("up did not say the cluster runs")
	}

	urls := fmt.Sprintf("nats://127.0.0.1:%d,nats://127.0.0.1:%d,nats://127.0.0.1:%d", ports[0], ports[1], ports[2])
	rsp := func(args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(bin, "rsp"), append([]string{"--nats", urls, "--data", dir}, args...)...)
		cmd.Env = os.Environ()
		return cmd
	}
	// A lifetime longer than a JetStream leader failover (about 6 s
	// here when the stream leader's node dies), so renewals outlast it.
	// register starts `rsp register` and waits until it says the PE is
	// registered. A registration made while the stream has no leader (a
	// few seconds after a node died) fails and rsp exits: then again,
	// until within.
	register := func(id, addr string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for attempt := 1; ; attempt++ {
			err := startRegister(t, rsp("register", "echo", "--addr", addr, "--id", id, "--lifetime", "15s"))
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("rsp register %s: %v", id, err)
			}
			t.Logf("rsp register %s, attempt %d: %v; trying again", id, attempt, err)
			time.Sleep(time.Second)
		}
	}
	// resolve returns the PE ids that resolving pool echo gives, trying
	// again for up to wait while it fails or misses want.
	resolve := func(wait time.Duration, want ...string) []string {
		t.Helper()
		deadline := time.Now().Add(wait)
		for {
			out, err := rsp("resolve", "echo", "--json", "--max", "10").CombinedOutput()
			var ids []string
			if err == nil {
				var ans struct {
					Elements []struct {
						PEID string `json:"pe_id"`
					} `json:"elements"`
				}
				if err = json.Unmarshal(out, &ans); err == nil {
					for _, e := range ans.Elements {
						ids = append(ids, e.PEID)
					}
					slices.Sort(ids)
					missing := slices.ContainsFunc(want, func(w string) bool { return !slices.Contains(ids, w) })
					if !missing {
						return ids
					}
					err = fmt.Errorf("got %v, want %v", ids, want)
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("rsp resolve echo: %v: %s", err, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	register("echo-1", "tcp:127.0.0.1:7001", 0)
	t.Logf("resolved before the kill: %v", resolve(5*time.Second, "echo-1"))

	pid := readPID(t, filepath.Join(dir, "pids", "n1.pid"))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 n1 (pid %d): %v", pid, err)
	}
	killed := time.Now()
	t.Logf("resolved right after kill -9 of n1: %v (%s)", resolve(10*time.Second, "echo-1"), time.Since(killed).Round(time.Millisecond))

	register("echo-2", "tcp:127.0.0.1:7002", 20*time.Second)
	t.Logf("echo-2 registered %s after the kill", time.Since(killed).Round(time.Millisecond))
	// Past echo-1's lifetime: it renewed through the failover.
	time.Sleep(time.Until(killed.Add(17 * time.Second)))
	ids := resolve(time.Second, "echo-1", "echo-2")
	t.Logf("resolved 17 s after the kill: %v", ids)

	status := run(time.Minute, "status")
	if !strings.Contains(status, "n1   not running") || strings.Count(status, "running (pid") != 4 {
		t.Errorf("status after kill -9 of n1: want n1 down and n2, n3, ns1, ns2 running")
	}
	if strings.Count(status, "readyz ready") != 2 {
		t.Errorf("status: want both name servers ready on their --metrics port")
	}
	// Each name server's page sees both replicas up (their beats cross the
	// cluster).
	for _, port := range ports[9:11] {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := `rsp_nameserver_replicas{scope="default",state="up"} 2`; !strings.Contains(string(body), want) {
			t.Errorf("metrics of the name server on port %d lack %s", port, want)
		}
	}
	run(2*time.Minute, "down")
	for _, name := range []string{"n2", "n3", "ns1", "ns2"} {
		if _, err := os.Stat(filepath.Join(dir, "pids", name+".pid")); err == nil {
			t.Errorf("pids/%s.pid still there after down", name)
		}
	}
}

// startRegister starts cmd (rsp register) and returns once it printed that
// the PE is registered; the process keeps running (renewing) until the
// test ends. An error means it exited or said nothing within 30 s.
func startRegister(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var line string
	select {
	case line = <-lines:
	case <-time.After(30 * time.Second):
	}
	if strings.Contains(line, "registered") {
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		})
		return nil
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return fmt.Errorf("%q, stderr: %s", line, strings.TrimSpace(stderr.String()))
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pid
}

// freePorts returns n TCP ports of 127.0.0.1 that were free a moment ago.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
