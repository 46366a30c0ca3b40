package monitor_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/schemas"
	"github.com/rserpool/rsp/services/nameserver/monitor"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestMonitor runs a name server on a real embedded NATS server with the
// monitor in front and drives it through the client library: health
// before and after the name space is loaded, every stream message (checked
// against its schema) and the metrics each action must move.
func TestMonitor(t *testing.T) {
	s := nstest.StartNATS(t)
	reg := prometheus.NewRegistry()
	metrics, err := server.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	mon := monitor.New(monitor.Config{Gatherer: reg, StatsInterval: 200 * time.Millisecond, Logger: nstest.Logger()})
	t.Cleanup(mon.Close)
	web := httptest.NewServer(mon.Handler())
	t.Cleanup(web.Close)

	wantStatus(t, web.URL+"/healthz", http.StatusOK, "ok")
	wantStatus(t, web.URL+"/readyz", http.StatusServiceUnavailable, "not ready")
	wantStatus(t, web.URL+"/api/stream", http.StatusServiceUnavailable, "not ready")
	wantStatus(t, web.URL+"/", http.StatusOK, `id="status"`)

	ns := nstest.StartNameServer(t, s, server.Config{Metrics: metrics, NoChecks: true, MaxBadPEReports: 1})
	if err := mon.Attach(ns); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, web.URL+"/readyz", http.StatusOK, "ready")

	stream := openStream(t, web.URL+"/api/stream")
	snap := stream.next(t, "snapshot")
	if !strings.Contains(snap, `"replica":"`+ns.ID()+`"`) || !strings.Contains(snap, `"pools":[]`) {
		t.Fatalf("first snapshot: %s", snap)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	owner := client(t, s)
	a, err := owner.Register(ctx, "echo", rspclient.PE{ID: "a", Lifetime: time.Second,
		Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7001"}}, Meta: map[string]string{"zone": "z1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.Deregister(context.Background()) }()
	b, err := owner.Register(ctx, "echo", rspclient.PE{ID: "b", Lifetime: 30 * time.Second,
		Transports: []events.Transport{{Proto: "nats", Subject: "svc.echo.b"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		var ch struct {
			Change events.Change  `json:"change"`
			Record *events.Record `json:"record"`
			Policy string         `json:"policy"`
		}
		decodeJSON(t, stream.next(t, "change"), &ch)
		if ch.Change.Op != events.OpAdd || ch.Change.PEID != id || ch.Record == nil || ch.Record.PEID != id ||
			ch.Record.RegisteredAt.IsZero() || ch.Policy != "round_robin" {
			t.Fatalf("change for %s: %+v", id, ch)
		}
	}

	// Another key may not take over a's id: refused, counted by code.
	if _, err := client(t, s).Register(ctx, "echo", rspclient.PE{ID: "a",
		Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7009"}}}); err == nil {
		t.Fatal("a second key registered PE a")
	}
	resolutions := 5
	for range resolutions {
		if _, err := owner.Resolve(ctx, "echo", events.ResolveRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := owner.Resolve(ctx, "nothing", events.ResolveRequest{}); err == nil {
		t.Fatal("resolved a pool that does not exist")
	}

	// Stats: the pool's size, its resolutions per second, and a's
	// renewals (every third of its 1 s lifetime). A rate shows only while
	// the last two beats of the replica bracket resolutions (a second):
	// a loaded machine can deliver the beats that count the first ones
	// between two stats, so each stats read is followed by one more
	// resolution (counted for the checks below).
	var sawRate, sawRenewal bool
	for deadline := time.Now().Add(5 * time.Second); !(sawRate && sawRenewal) && time.Now().Before(deadline); {
		var st struct {
			Scopes []struct {
				Scope string  `json:"scope"`
				Rate  float64 `json:"resolutions_per_s"`
				Pools []struct {
					Pool string  `json:"pool"`
					Size int     `json:"size"`
					Rate float64 `json:"resolutions_per_s"`
				} `json:"pools"`
			} `json:"scopes"`
			Renewed []struct {
				PEID      string    `json:"pe_id"`
				UpdatedAt time.Time `json:"updated_at"`
			} `json:"renewed"`
		}
		decodeJSON(t, stream.next(t, "stats"), &st)
		if len(st.Scopes) != 1 || len(st.Scopes[0].Pools) != 1 || st.Scopes[0].Pools[0].Size != 2 {
			t.Fatalf("stats: %+v", st)
		}
		sawRate = sawRate || (st.Scopes[0].Pools[0].Rate > 0 && st.Scopes[0].Rate >= st.Scopes[0].Pools[0].Rate)
		for _, r := range st.Renewed {
			sawRenewal = sawRenewal || (r.PEID == "a" && !r.UpdatedAt.IsZero())
		}
		if !sawRate {
			if _, err := owner.Resolve(ctx, "echo", events.ResolveRequest{}); err != nil {
				t.Fatal(err)
			}
			resolutions++
		}
	}
	if !sawRate || !sawRenewal {
		t.Fatalf("stats never showed resolutions per second (%v) or a renewal of a (%v)", sawRate, sawRenewal)
	}

	// A page opened now gets the stats so far with its snapshot.
	var late struct {
		History []struct {
			Scopes []struct {
				Pools []struct {
					Pool string `json:"pool"`
					Size int    `json:"size"`
				} `json:"pools"`
			} `json:"scopes"`
		} `json:"history"`
	}
	decodeJSON(t, openStream(t, web.URL+"/api/stream").next(t, "snapshot"), &late)
	if n := len(late.History); n < 2 || len(late.History[n-1].Scopes[0].Pools) != 1 || late.History[n-1].Scopes[0].Pools[0].Size != 2 {
		t.Fatalf("history of a late snapshot: %+v", late.History)
	}

	// Read from the view at scrape time: present while the pool is.
	for _, c := range []struct {
		name string
		want float64
	}{{server.MetricResolutions, float64(resolutions)}, {server.MetricPoolElements, 2}} {
		labels := map[string]string{"pool": "echo", "policy": "round_robin", "replica": ns.ID(), "scope": "default"}
		if got, ok := metricValue(t, reg, c.name, labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, labels, got, ok, c.want)
		}
	}

	if err := b.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	wantRemove(t, stream, "b", events.ReasonDeregistered)
	// One report takes a out (MaxBadPEReports 1).
	if err := client(t, s).ReportFailure(ctx, "echo", "a", "connect refused"); err != nil {
		t.Fatal(err)
	}
	wantRemove(t, stream, "a", events.ReasonFailed)

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{server.MetricEventsApplied, map[string]string{"kind": "deregister"}, 1},
		{server.MetricEventsApplied, map[string]string{"kind": "failure"}, 1},
		{server.MetricEventsRefused, map[string]string{"kind": "register", "code": "forbidden"}, 1},
		{server.MetricResolutionErrors, map[string]string{"code": "not_found"}, 1},
		{server.MetricResolutionSeconds, map[string]string{"scope": "default"}, float64(resolutions + 1)},
		{server.MetricChanges, map[string]string{"op": "add", "reason": "registered"}, 2},
		{server.MetricRemovals, map[string]string{"reason": "deregistered"}, 1},
		{server.MetricRemovals, map[string]string{"reason": "failed"}, 1},
		{server.MetricFailureReports, map[string]string{"result": "counted"}, 1},
		{server.MetricConsumerPending, map[string]string{"consumer": "rsp-nameservers-default"}, 0},
	} {
		if got, ok := metricValue(t, reg, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	// Registrations and a's renewals.
	if got, _ := metricValue(t, reg, server.MetricEventsApplied, map[string]string{"kind": "register"}); got < 3 {
		t.Errorf("%s{kind=register} = %v, want at least 3 (2 registrations and renewals)", server.MetricEventsApplied, got)
	}
	// The pool is gone: no size series left for it.
	if got, ok := metricValue(t, reg, server.MetricPoolElements, map[string]string{"pool": "echo"}); ok {
		t.Errorf("%s{pool=echo} = %v after its last PE left", server.MetricPoolElements, got)
	}
	body := wantStatus(t, web.URL+"/metrics", http.StatusOK, server.MetricResolutionSeconds+"_bucket")
	for _, name := range []string{server.MetricEventsApplied, server.MetricConsumerAckPend} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	ns.Stop()
	wantStatus(t, web.URL+"/readyz", http.StatusServiceUnavailable, "stopped")
}

func client(t *testing.T, s *natsserver.Server) *rspclient.Client {
	t.Helper()
	c, err := rspclient.New(nstest.Connect(t, s), rspclient.WithLogger(nstest.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantRemove(t *testing.T, st *sseStream, id, reason string) {
	t.Helper()
	for {
		var ch struct {
			Change events.Change  `json:"change"`
			Record *events.Record `json:"record"`
		}
		decodeJSON(t, st.next(t, "change"), &ch)
		if ch.Change.Op == events.OpRemove && ch.Change.PEID == id {
			if ch.Change.Reason != reason || ch.Record != nil {
				t.Fatalf("remove of %s: %+v, want reason %s and no record", id, ch, reason)
			}
			return
		}
	}
}

func wantStatus(t *testing.T, url string, code int, contains string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code || !strings.Contains(string(b), contains) {
		t.Fatalf("GET %s: %d %q, want %d with %q", url, resp.StatusCode, b, code, contains)
	}
	return string(b)
}

func decodeJSON(t *testing.T, data string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(data), v); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
}

// sseStream reads server-sent events; each message is checked against the
// schema monitor_<event>.
type sseStream struct {
	msgs chan [2]string // event, data
}

func openStream(t *testing.T, url string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s: %s %s", url, resp.Status, resp.Header.Get("Content-Type"))
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	st := &sseStream{msgs: make(chan [2]string, 1024)}
	go func() {
		defer close(st.msgs)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 16<<20)
		var event string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				st.msgs <- [2]string{event, strings.TrimPrefix(line, "data: ")}
			}
		}
	}()
	return st
}

// next returns the data of the next message of the event kind (skipping
// others), failing after 5 s.
func (st *sseStream) next(t *testing.T, event string) string {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m, ok := <-st.msgs:
			if !ok {
				t.Fatalf("stream ended waiting for %s", event)
			}
			if err := schemas.Validate("monitor_"+m[0], []byte(m[1])); err != nil {
				t.Fatalf("%s message: %v\n%s", m[0], err, m[1])
			}
			if m[0] == event {
				return m[1]
			}
		case <-timeout:
			t.Fatalf("no %s message within 5 s", event)
		}
	}
}

// metricValue sums the series of name whose labels include labels (a
// histogram counts its observations); ok is false when none matches.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (sum float64, ok bool) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			ok = true
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum, ok
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
			n++
		}
	}
	return n == len(want)
}

// TestNameServerShares runs two replicas of one scope with the monitor on
// one of them: its stats list both, each with its share of the
// resolutions (the queue group splits them), and the replica that stops is
// shown stopped at once. The beats on NATS match their schema.
func TestNameServerShares(t *testing.T) {
	s := nstest.StartNATS(t)
	ns1 := nstest.StartNameServer(t, s, server.Config{ID: "ns-1"})
	ns2 := nstest.StartNameServer(t, s, server.Config{ID: "ns-2"})
	mon := monitor.New(monitor.Config{StatsInterval: 200 * time.Millisecond, Logger: nstest.Logger()})
	t.Cleanup(mon.Close)
	reg := prometheus.NewRegistry()
	reg.MustRegister(mon.Collector())
	if err := mon.Attach(ns1); err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(mon.Handler())
	t.Cleanup(web.Close)

	nc := nstest.Connect(t, s)
	beats, err := nc.SubscribeSync(events.NameServersSubject("default"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	owner := client(t, s)
	if _, err := owner.Register(ctx, "echo", rspclient.PE{ID: "a", Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7001"}}}); err != nil {
		t.Fatal(err)
	}
	trafficCtx, stopTraffic := context.WithCancel(ctx)
	defer stopTraffic()
	go func() {
		for trafficCtx.Err() == nil {
			_, _ = nc.Request(events.Subject("default", events.KindResolve, "echo"), nil, time.Second)
			time.Sleep(2 * time.Millisecond)
		}
	}()

	type nameServer struct {
		ID    string  `json:"id"`
		State string  `json:"state"`
		Rate  float64 `json:"resolutions_per_s"`
		PEs   int     `json:"pes"`
	}
	type stats struct {
		Scopes []struct {
			Rate        float64      `json:"resolutions_per_s"`
			NameServers []nameServer `json:"nameservers"`
			Pools       []struct {
				Rate float64 `json:"resolutions_per_s"`
			} `json:"pools"`
		} `json:"scopes"`
	}
	stream := openStream(t, web.URL+"/api/stream")
	shared := false
	for deadline := time.Now().Add(10 * time.Second); !shared && time.Now().Before(deadline); {
		var st stats
		decodeJSON(t, stream.next(t, "stats"), &st)
		sc := st.Scopes[0]
		if len(sc.NameServers) != 2 {
			continue
		}
		sum := sc.NameServers[0].Rate + sc.NameServers[1].Rate
		if sc.NameServers[0].ID != "ns-1" || sc.NameServers[1].ID != "ns-2" || sc.NameServers[0].State != "up" ||
			sc.NameServers[1].State != "up" || math.Abs(sc.Rate-sum) > 1e-6 || math.Abs(sc.Pools[0].Rate-sum) > 1e-6 {
			t.Fatalf("stats: %+v", sc)
		}
		shared = sc.NameServers[0].Rate > 0 && sc.NameServers[1].Rate > 0 && sc.NameServers[1].PEs == 1
	}
	if !shared {
		t.Fatal("the stats never showed both replicas answering")
	}
	for range 3 {
		m, err := beats.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := schemas.Validate("nameserver_beat", m.Data); err != nil {
			t.Fatalf("beat %s: %v", m.Data, err)
		}
	}

	ns2.Stop()
	for deadline := time.Now().Add(5 * time.Second); ; {
		var st stats
		decodeJSON(t, stream.next(t, "stats"), &st)
		if ns := st.Scopes[0].NameServers; len(ns) == 2 && ns[1].State == "stopped" && ns[1].Rate == 0 && ns[0].State == "up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ns-2 not shown stopped: %+v", st)
		}
	}
	for state, want := range map[string]float64{"up": 1, "stopped": 1, "silent": 0} {
		if got, ok := metricValue(t, reg, "rsp_nameserver_replicas", map[string]string{"scope": "default", "state": state}); !ok || got != want {
			t.Errorf("rsp_nameserver_replicas{state=%s} = %v (found %v), want %v", state, got, ok, want)
		}
	}
}
