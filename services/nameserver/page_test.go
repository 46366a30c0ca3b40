package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/events"
)

// TestPoolPage opens the name server's live pool page in headless Chromium
// (Debian's chromium; .ci/run installs it), registers PEs with real `rsp
// register` processes, kills, stops and suspends them, and asserts the page
// shows each change within a second of its change message on NATS: a new
// PE's row, the pool's size, a removed PE highlighted with its reason
// (disconnected, deregistered, expired, failed), then gone. With
// RSP_SCREENSHOT=FILE it saves a screenshot of the page (task screenshot:
// docs/pool-page.png).
func TestPoolPage(t *testing.T) {
	browser := chromium(t)
	data := t.TempDir()
	ns := startProcess(t, "--listen", "127.0.0.1:0", "--data", data, "--metrics", "127.0.0.1:0")
	if ns.pageURL == "" {
		t.Fatal("the banner names no pool page")
	}
	pu := natsconn.Creds(credsOf(data, "default", "pu"))
	nc, err := nats.Connect(ns.natsURL, pu)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	changes := watchChanges(t, nc)

	page := openPage(t, browser, ns.pageURL)
	page.wait(t, time.Now().Add(10*time.Second), `document.querySelector('#status[data-state="open"]') !== null`)

	// Resolution traffic, for the charts: its rate rises and falls.
	trafficCtx, stopTraffic := context.WithCancel(context.Background())
	defer stopTraffic()
	go func() {
		for i := 0; trafficCtx.Err() == nil; i++ {
			for _, pool := range []string{"echo", "jobs", "api"} {
				_, _ = nc.Request(events.Subject("default", events.KindResolve, pool), []byte(`{"max":2}`), time.Second)
			}
			time.Sleep(time.Duration(5+i%400/10) * time.Millisecond)
		}
	}()

	pes := map[string]*exec.Cmd{}
	register := func(pool, id string, args ...string) {
		t.Helper()
		pes[id] = startPE(t, ns.natsURL, data, pool, id, args...)
		at := changes.await(t, id, events.OpAdd)
		page.wait(t, at.Add(time.Second), fmt.Sprintf(`document.querySelector('tr[data-pe="default/%s/%s"][data-state="live"]') !== null`, pool, id))
		t.Logf("add %s on the page %v after its change message", id, time.Since(at).Round(time.Millisecond))
	}
	register("echo", "echo-1", "--addr", "tcp:"+closedAddr(t), "--meta", "zone=a")
	register("echo", "echo-2", "--addr", "tcp:127.0.0.1:7002", "--meta", "zone=b")
	register("echo", "echo-3", "--addr", "tcp:127.0.0.1:7003", "--meta", "zone=a")
	register("jobs", "jobs-1", "--addr", "nats:svc.jobs.1", "--policy", "least_used", "--load", "0.2")
	register("jobs", "jobs-2", "--addr", "nats:svc.jobs.2", "--policy", "least_used", "--load", "0.7")
	register("jobs", "jobs-3", "--addr", "nats:svc.jobs.3", "--policy", "least_used", "--load", "0.45", "--lifetime", "2s")
	register("api", "api-1", "--addr", "http:http://10.0.0.1:8080/", "--policy", "weighted_round_robin", "--weight", "3", "--meta", "zone=a")
	register("api", "api-2", "--addr", "http:http://10.0.0.2:8080/", "--policy", "weighted_round_robin", "--weight", "1", "--meta", "zone=b")

	page.wait(t, time.Now().Add(time.Second), `(() => {
		const p = document.querySelector('[data-pool="default/echo"]');
		return p && p.dataset.size === "3" && p.dataset.policy === "round_robin";
	})()`)
	page.wait(t, time.Now().Add(time.Second), `(() => {
		const row = document.querySelector('tr[data-pe="default/jobs/jobs-1"]');
		const text = f => row.querySelector('[data-field="' + f + '"]').textContent;
		return text("transports").includes("svc.jobs.1") && text("load").includes("20") && text("home") !== "" &&
			/\d/.test(text("age")) && /\d/.test(text("lifetime-left")) &&
			document.querySelector('tr[data-pe="default/api/api-1"] [data-field="params"]').textContent.includes("weight=3") &&
			document.querySelector('tr[data-pe="default/api/api-2"] [data-field="meta"]').textContent.includes("zone=b");
	})()`)
	// Resolutions per second reach the page's stats (this replica answers
	// them all).
	page.wait(t, time.Now().Add(5*time.Second), `window.rspPage && window.rspPage.stats >= 2 &&
		document.querySelector('[data-scope="default"] svg[data-chart="scope-rate"]') !== null &&
		document.querySelector('[data-pool="default/echo"] svg[data-chart="pool-size"]') !== null &&
		document.querySelector('[data-pool="default/echo"] svg[data-chart="pool-rate"]') !== null`)
	// The replica is listed, up, answering.
	page.wait(t, time.Now().Add(5*time.Second), `(() => {
		const ns = document.querySelector('[data-scope="default"] [data-nameserver][data-state="up"]');
		return ns && parseFloat(ns.querySelector('[data-field="ns-rate"]').textContent) > 0;
	})()`)

	screenshot := os.Getenv("RSP_SCREENSHOT")
	if screenshot != "" {
		time.Sleep(45 * time.Second) // charts with some history for the picture
	}

	removed := func(pool, id, reason string) {
		t.Helper()
		at := changes.await(t, id, events.OpRemove)
		page.wait(t, at.Add(time.Second), fmt.Sprintf(
			`document.querySelector('tr[data-pe="default/%s/%s"][data-state="removed"][data-reason="%s"]') !== null`, pool, id, reason))
		t.Logf("remove %s (%s) on the page %v after its change message", id, reason, time.Since(at).Round(time.Millisecond))
	}
	// A crash: its connection closes, the name server takes it out.
	_ = pes["echo-2"].Process.Signal(syscall.SIGKILL)
	removed("echo", "echo-2", events.ReasonDisconnected)
	page.wait(t, time.Now().Add(time.Second), `document.querySelector('[data-pool="default/echo"]').dataset.size === "2"`)
	// A clean stop deregisters.
	_ = pes["echo-3"].Process.Signal(syscall.SIGTERM)
	removed("echo", "echo-3", events.ReasonDeregistered)
	// A hung PE (connection open, no renewals) expires with its lifetime.
	_ = pes["jobs-3"].Process.Signal(syscall.SIGSTOP)
	removed("jobs", "jobs-3", events.ReasonExpired)
	page.wait(t, time.Now().Add(time.Second), `[...document.querySelectorAll('[data-change]')].some(e => e.textContent.includes("jobs-3") && e.textContent.includes("expired"))`)
	// A PU reports echo-1, whose port nothing listens on: the name server
	// checks it itself and takes it out at once. (Its rsp register is
	// suspended first, or its next renewal would bring it back.)
	_ = pes["echo-1"].Process.Signal(syscall.SIGSTOP)
	report := exec.Command(rspBin, "--nats", ns.natsURL, "--data", data, "report", "echo", "echo-1", "--reason", "connect refused")
	report.Env = append(os.Environ(), "HOME="+filepath.Join(data, "home-pu"))
	if out, err := report.CombinedOutput(); err != nil {
		t.Fatalf("rsp report: %v\n%s", err, out)
	}
	removed("echo", "echo-1", events.ReasonFailed)
	page.wait(t, time.Now().Add(time.Second), `document.querySelector('[data-pool="default/echo"]').dataset.size === "0"`)

	if path := screenshot; path != "" {
		png, err := chromedp.Run(page.ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}

	// Removed rows go after their 10 s, and so does the empty pool.
	page.wait(t, time.Now().Add(12*time.Second), `document.querySelector('tr[data-pe="default/echo/echo-2"]') === null`)
	page.wait(t, time.Now().Add(12*time.Second), `document.querySelector('[data-pool="default/echo"]') === null`)
	page.wait(t, time.Now().Add(time.Second), `document.querySelector('tr[data-pe="default/api/api-1"][data-state="live"]') !== null`)
	page.noErrors(t)

	// The same listener serves health and metrics.
	for path, want := range map[string]string{"healthz": "ok", "readyz": "ready", "metrics": `rsp_pool_elements{policy="weighted_round_robin",pool="api"`} {
		resp, err := http.Get(ns.pageURL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET /%s: %s, want 200 with %q", path, resp.Status, want)
		}
	}
}

// chromium finds the browser: $RSP_CHROMIUM, or chromium on PATH. Without
// one the test is skipped, unless RSP_BROWSER_TESTS=require (as in .ci/run).
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("RSP_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("RSP_BROWSER_TESTS") == "require" {
		t.Fatal("no chromium on PATH (apt-get install chromium) and RSP_BROWSER_TESTS=require")
	}
	t.Skip("no chromium on PATH: install Debian's chromium to run the browser test (.ci/run does)")
	return ""
}

// browserPage is a tab of headless Chromium.
type browserPage struct {
	ctx context.Context

	mu       sync.Mutex
	messages []chromedp.ConsoleMessage // errors and exceptions of the page
}

func openPage(t *testing.T, browser, url string) *browserPage {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU,
		// This machine's network is closed: no background connections.
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1100))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	p := &browserPage{ctx: ctx}
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if (m.Type == chromedp.ConsoleError || m.IsException()) && !strings.Contains(m.URL, "favicon") {
				p.mu.Lock()
				p.messages = append(p.messages, m)
				p.mu.Unlock()
			}
		}
	}()
	nctx, ncancel := context.WithTimeout(ctx, 30*time.Second)
	defer ncancel()
	if err := chromedp.Do(nctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	return p
}

// wait waits until the JavaScript expression is true on the page, at most
// until deadline.
func (p *browserPage) wait(t *testing.T, deadline time.Time, expr string) {
	t.Helper()
	ctx, cancel := context.WithDeadline(p.ctx, deadline.Add(100*time.Millisecond))
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(max(time.Until(deadline), time.Millisecond))))
	if err != nil {
		html, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`document.querySelector("main") ? document.querySelector("main").innerText : document.body.innerText`))
		t.Fatalf("the page did not show %s in time: %v\npage text:\n%s", expr, err, html)
	}
}

func (p *browserPage) noErrors(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.messages {
		t.Errorf("page console: %s", m)
	}
}

// changeLog records when each change message arrived.
type changeLog struct {
	mu      sync.Mutex
	seen    map[string]time.Time // pe_id/op → arrival
	arrived chan struct{}
}

func watchChanges(t *testing.T, nc *nats.Conn) *changeLog {
	t.Helper()
	cl := &changeLog{seen: map[string]time.Time{}, arrived: make(chan struct{}, 1)}
	_, err := nc.Subscribe(events.Subject("default", events.KindChanges, "*"), func(m *nats.Msg) {
		now := time.Now()
		var ch events.Change
		if events.Decode(m.Data, &ch) != nil {
			return
		}
		cl.mu.Lock()
		if _, ok := cl.seen[ch.PEID+"/"+ch.Op]; !ok {
			cl.seen[ch.PEID+"/"+ch.Op] = now
		}
		cl.mu.Unlock()
		select {
		case cl.arrived <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

// await returns when the change op of PE id arrived, waiting for it at
// most 15 s.
func (cl *changeLog) await(t *testing.T, id, op string) time.Time {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		cl.mu.Lock()
		at, ok := cl.seen[id+"/"+op]
		cl.mu.Unlock()
		if ok {
			return at
		}
		select {
		case <-cl.arrived:
		case <-timeout:
			t.Fatalf("no %s change for %s within 15s", op, id)
		}
	}
}

// closedAddr is a loopback address nothing listens on (a port that was
// just free).
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// startPE runs `rsp register` for a PE until the test ends.
func startPE(t *testing.T, url, data, pool, id string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(rspBin, append([]string{"--nats", url, "--data", data, "register", pool, "--id", id}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+filepath.Join(data, "home-"+id))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		err := cmd.Wait()
		var exit *exec.ExitError
		if t.Failed() && err != nil && !errors.As(err, &exit) {
			t.Logf("rsp register %s: %v\n%s", id, err, stderr.String())
		}
	})
	return cmd
}
