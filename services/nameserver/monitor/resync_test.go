package monitor_test

import (
	"context"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/monitor"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestPageResyncAfterReconnect: the replica showing the page loses its
// NATS connection while another replica removes and adds PEs; the change
// messages of that time never reach it, but once it is back, the open
// page gets the removal and the add within a second of the replica's view
// showing them.
func TestPageResyncAfterReconnect(t *testing.T) {
	s := nstest.StartNATS(t)
	nc, gate := nstest.ConnectGated(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns, err := server.Start(ctx, nc, server.Config{Logger: nstest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	nstest.StartNameServer(t, s, server.Config{}) // the replica that goes on
	mon := monitor.New(monitor.Config{Logger: nstest.Logger()})
	t.Cleanup(mon.Close)
	if err := mon.Attach(ns); err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(mon.Handler())
	t.Cleanup(web.Close)

	pe := client(t, s)
	tr := []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:1"}}
	regs := map[string]*rspclient.Registration{}
	for _, id := range []string{"a", "b"} {
		r, err := pe.Register(ctx, "pg", rspclient.PE{ID: id, Transports: tr, Lifetime: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		regs[id] = r
	}
	inView := func(want ...string) bool {
		_, recs, _ := ns.Pool(events.DefaultScope, "pg")
		var got []string
		for _, r := range recs {
			got = append(got, r.PEID)
		}
		return slices.Equal(got, want)
	}
	waitFor(t, "a and b in the view", func() bool { return inView("a", "b") })
	stream := openStream(t, web.URL+"/api/stream")
	stream.next(t, "snapshot")
	time.Sleep(300 * time.Millisecond) // the mirror of the page is filled at the next round

	// Cut the page's replica off; meanwhile b goes and c comes.
	gate.CutOff(t)
	if err := regs["b"].Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pe.Register(ctx, "pg", rspclient.PE{ID: "c", Transports: tr, Lifetime: time.Hour}); err != nil {
		t.Fatal(err)
	}
	gate.Open(t)
	waitFor(t, "a and c in the replica's view", func() bool { return inView("a", "c") })
	viewAt := time.Now()
	got := map[string]events.Change{}
	for got["remove b"].PEID == "" || got["add c"].PEID == "" { // (late adds of a and b may come first)
		var msg struct {
			Change events.Change  `json:"change"`
			Record *events.Record `json:"record"`
		}
		decodeJSON(t, stream.next(t, "change"), &msg)
		got[msg.Change.Op+" "+msg.Change.PEID] = msg.Change
		if msg.Change.Op == events.OpAdd && msg.Record == nil {
			t.Errorf("add without record: %+v", msg)
		}
	}
	took := time.Since(viewAt)
	if took > time.Second {
		t.Errorf("the page in line %s after the view, want within 1 s", took)
	}
	t.Logf("the page got the missed changes %s after the replica's view showed them", took.Round(time.Millisecond))
}

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
