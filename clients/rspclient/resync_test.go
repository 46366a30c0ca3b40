package rspclient

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// nextWatched returns the next change of w, failing after within.
func nextWatched(t *testing.T, w *Watcher, within time.Duration) events.Change {
	t.Helper()
	select {
	case ch, ok := <-w.Changes():
		if !ok {
			t.Fatalf("watch ended: %v", w.Err())
		}
		return ch
	case <-time.After(within):
		t.Fatalf("no change within %s", within)
	}
	panic("unreachable")
}

// waitChange reads the changes of w until one of PE id with op arrives,
// failing on any remove of another PE, and after within.
func waitChange(t *testing.T, w *Watcher, op, id string, within time.Duration) events.Change {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ch := nextWatched(t, w, time.Until(deadline))
		if ch.Op == op && ch.PEID == id {
			return ch
		}
		if ch.Op == events.OpRemove {
			t.Fatalf("unexpected %+v while waiting for %s %s", ch, op, id)
		}
	}
}

var tcp1 = []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:1"}}

// TestWatchResyncAfterNameServerRestart: a PE dies (its connection closes
// without a deregistration, insecure mode: no disconnect detection) while
// no name server runs; once one runs again, the watcher and the cache lose
// the PE within a bound, and keep the PE that lives.
func TestWatchResyncAfterNameServerRestart(t *testing.T) {
	s := startNATS(t)
	ns := startNameServer(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	live := newClient(t, connect(t, s))
	if _, err := live.Register(ctx, "rs", PE{ID: "live", Transports: tcp1, Lifetime: time.Hour}); err != nil {
		t.Fatal(err)
	}
	dyingConn := connect(t, s)
	const lifetime = 600 * time.Millisecond
	if _, err := newClient(t, dyingConn).Register(ctx, "rs", PE{ID: "dies", Transports: tcp1, Lifetime: lifetime}); err != nil {
		t.Fatal(err)
	}
	pu := newClient(t, connect(t, s), WithLogger(testLogger()))
	w, err := pu.Watcher(ctx, "rs")
	if err != nil {
		t.Fatal(err)
	}
	got := []string{nextWatched(t, w, 5*time.Second).PEID, nextWatched(t, w, 5*time.Second).PEID}
	if slices.Sort(got); !slices.Equal(got, []string{"dies", "live"}) {
		t.Fatalf("snapshot %v, want dies and live", got)
	}
	pc, err := pu.Cache(ctx, "rs", WithResync(0))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	// A ghost: an add announced whose PE the bucket does not hold (as
	// when its removal was never announced), at a revision after the
	// watch's read. Only a resync removes it.
	if _, err := live.Register(ctx, "rs", PE{ID: "live2", Transports: tcp1, Lifetime: time.Hour}); err != nil {
		t.Fatal(err)
	}
	// The ghost takes live2's revision: the watcher must have seen live2's
	// add first (the name server announces it over its own connection, so
	// the ghost could overtake it; the watcher would then take the late add
	// for one it already had, and only the resync would bring live2 back).
	waitChange(t, w, events.OpAdd, "live2", 5*time.Second)
	ghost := events.Change{Scope: events.DefaultScope, Pool: "rs", Revision: lastRevision(t, pu), Op: events.OpAdd, PEID: "ghost",
		Reason: events.ReasonRegistered, Element: &events.Element{PEID: "ghost", Transports: tcp1}}
	if err := live.nc.Publish(events.Subject(events.DefaultScope, events.KindChanges, "rs"), events.Marshal(ghost)); err != nil {
		t.Fatal(err)
	}
	waitChange(t, w, events.OpAdd, "ghost", 5*time.Second)
	eventually(t, "the ghost in the cache", func() bool { return hasID(pc.Members(), "ghost") })

	ns.Stop()
	dyingConn.Close()
	// Its lifetime runs out while no name server runs.
	time.Sleep(2 * lifetime)
	restarted := time.Now()
	startNameServer(t, s)
	took := map[string]time.Duration{}
	for len(took) < 2 {
		ch := nextWatched(t, w, lifetime+3*time.Second)
		if ch.Op != events.OpRemove || (ch.PEID != "ghost" && ch.PEID != "dies") || ch.Reason != events.ReasonExpired {
			t.Fatalf("after the restart: %+v, want the removals of ghost and dies, expired", ch)
		}
		took[ch.PEID] = time.Since(restarted)
	}
	// The resync follows the new replica's first beat.
	if took["ghost"] > 1500*time.Millisecond {
		t.Errorf("ghost removed %s after the restart, want within 1.5 s", took["ghost"])
	}
	eventually(t, "dies and ghost out of the cache", func() bool { return slices.Equal(ids(pc.Members()), []string{"live", "live2"}) })
	t.Logf("after the name server started again: resync removed the ghost in %s; dies removed in %s",
		took["ghost"].Round(time.Millisecond), took["dies"].Round(time.Millisecond))
}

// registerAll registers the PEs ids in pool, with a lifetime of an hour.
func registerAll(ctx context.Context, t *testing.T, pe *Client, pool string, ids ...string) map[string]*Registration {
	t.Helper()
	regs := map[string]*Registration{}
	for _, id := range ids {
		r, err := pe.Register(ctx, pool, PE{ID: id, Transports: tcp1, Lifetime: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		regs[id] = r
	}
	return regs
}

// TestWatchResyncAfterReconnect: the changes announced while the watcher's
// connection was down reach it, with their reasons, by the resync that
// follows its reconnect; a cache on the same connection follows too.
func TestWatchResyncAfterReconnect(t *testing.T) {
	s := startNATS(t)
	// One report takes a PE out (reason failed), without a check.
	nstest.StartNameServer(t, s, server.Config{NoChecks: true, MaxBadPEReports: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pe := newClient(t, connect(t, s))
	regs := registerAll(ctx, t, pe, "rc", "a", "b", "c", "f")
	nc, gate := nstest.ConnectGated(t, s)
	pu := newClient(t, nc)
	w, err := pu.Watcher(ctx, "rc")
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		nextWatched(t, w, 5*time.Second)
	}
	// A cache whose routine resyncs fail while the connection is down.
	pc, err := pu.Cache(ctx, "rc", WithResync(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()

	// Cut the watcher off; meanwhile b deregisters, f is reported failed
	// and taken out, d comes. Then let it back.
	gate.CutOff(t)
	eventually(t, "the cache's resync failing", func() bool { _, err := pc.SyncState(); return err != nil })
	if err := regs["b"].Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if err := newClient(t, connect(t, s)).ReportFailure(ctx, "rc", "f", "refused"); err != nil {
		t.Fatal(err)
	}
	if _, err := pe.Register(ctx, "rc", PE{ID: "d", Transports: tcp1, Lifetime: time.Hour}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "f out of the name space", func() bool {
		recs, err := pe.Pools(ctx)
		return err == nil && !slices.ContainsFunc(recs, func(r events.Record) bool { return r.PEID == "f" })
	})
	at := gate.Open(t)
	seen := map[string]events.Change{}
	for len(seen) < 3 {
		ch := nextWatched(t, w, time.Second)
		seen[ch.Op+" "+ch.PEID] = ch
	}
	took := time.Since(at)
	// The reasons come from the purge markers (Rsp-Reason).
	if rm, ok := seen["remove b"]; !ok || rm.Reason != events.ReasonDeregistered {
		t.Fatalf("after the reconnect: %v, want remove b (deregistered), remove f (failed), add d", seen)
	}
	if rm, ok := seen["remove f"]; !ok || rm.Reason != events.ReasonFailed {
		t.Fatalf("after the reconnect: %v, want remove b (deregistered), remove f (failed), add d", seen)
	}
	if _, ok := seen["add d"]; !ok {
		t.Fatalf("after the reconnect: %v, want remove b, remove f, add d", seen)
	}
	eventually(t, "the cache has a, c, d", func() bool { return slices.Equal(ids(pc.Members()), []string{"a", "c", "d"}) })
	if _, err := pc.SyncState(); err != nil {
		t.Fatalf("cache sync state: %v", err)
	}
	t.Logf("missed changes delivered %s after the reconnect", took.Round(time.Millisecond))
}

// TestWatchResume resumes a watch from the revision an earlier one
// reached: the changes made in between come, removals with their reasons,
// and nothing else; a revision the bucket never reached is refused.
func TestWatchResume(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pe := newClient(t, connect(t, s))
	regs := registerAll(ctx, t, pe, "rv", "a", "b", "c")
	pu := newClient(t, connect(t, s))
	wctx, wcancel := context.WithCancel(ctx)
	w, err := pu.Watcher(wctx, "rv")
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		nextWatched(t, w, 5*time.Second)
	}
	rev := w.Revision()
	if rev == 0 {
		t.Fatal("revision 0 after the snapshot")
	}
	wcancel()
	for range w.Changes() {
	}
	if !errors.Is(w.Err(), context.Canceled) {
		t.Fatalf("ended with %v, want context.Canceled", w.Err())
	}

	// Meanwhile: b leaves, d comes, c changes.
	if err := regs["b"].Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pe.Register(ctx, "rv", PE{ID: "d", Transports: tcp1, Lifetime: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := regs["c"].UpdateLoad(ctx, 0.5); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the changes stored", func() bool { return lastRevision(t, pu) >= rev+3 })

	w2, err := pu.Watcher(ctx, "rv", WithRevision(rev))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]events.Change{}
	for len(got) < 3 {
		ch := nextWatched(t, w2, 5*time.Second)
		got[ch.PEID] = ch
		if ch.Revision <= rev {
			t.Errorf("change %+v at or before the resumed revision %d", ch, rev)
		}
	}
	if ch := got["b"]; ch.Op != events.OpRemove || ch.Reason != events.ReasonDeregistered {
		t.Errorf("b: %+v, want remove deregistered", ch)
	}
	if ch := got["d"]; ch.Op != events.OpAdd || ch.Element == nil {
		t.Errorf("d: %+v, want add", ch)
	}
	if ch := got["c"]; ch.Op != events.OpUpdate || ch.Element == nil || ch.Element.Policy.Load != 0.5 {
		t.Errorf("c: %+v, want update with load 0.5", ch)
	}
	if _, ok := got["a"]; ok {
		t.Errorf("a unchanged since the revision, delivered again: %+v", got["a"])
	}
	select {
	case ch := <-w2.Changes():
		t.Fatalf("one more change: %+v", ch)
	case <-time.After(200 * time.Millisecond):
	}

	// A revision beyond the bucket's (a bucket made anew) is refused.
	if _, err := pu.Watcher(ctx, "rv", WithRevision(lastRevision(t, pu)+1000)); !errors.Is(err, ErrCompacted) {
		t.Fatalf("resuming from beyond the last revision: %v, want ErrCompacted", err)
	}
}

// TestWatcherEnds: Err tells why a watch ended.
func TestWatcherEnds(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	nc := connect(t, s)
	pu := newClient(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	w, err := pu.Watcher(ctx, "ends")
	if err != nil {
		t.Fatal(err)
	}
	if w.Err() != nil {
		t.Fatalf("Err while running: %v", w.Err())
	}
	for range w.Changes() {
	}
	if !errors.Is(w.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v, want the ctx's deadline", w.Err())
	}

	w2, err := pu.Watcher(context.Background(), "ends")
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	select {
	case <-w2.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("watch still running after its connection closed")
	}
	if !errors.Is(w2.Err(), ErrWatchClosed) {
		t.Fatalf("Err = %v, want ErrWatchClosed", w2.Err())
	}
}

func TestBeatTracker(t *testing.T) {
	t0 := time.Unix(1000, 0)
	bt := beatTracker{since: t0, seen: map[string]beatSeen{}}
	s1 := t0.Add(-time.Hour)
	beat := func(id string, started time.Time, stopping bool) events.NameServerBeat {
		return events.NameServerBeat{ID: id, StartedAt: started, Stopping: stopping}
	}
	for i, step := range []struct {
		b    events.NameServerBeat
		at   time.Duration // after t0
		want bool
	}{
		{beat("n1", s1, false), 100 * time.Millisecond, false}, // running before: learnt
		{beat("n1", s1, false), 1100 * time.Millisecond, false},
		{beat("n3", t0.Add(-time.Second), false), 1200 * time.Millisecond, true}, // started as the watch did
		{beat("n2", t0.Add(5*time.Second), false), 5 * time.Second, true},        // a new replica
		{beat("n2", t0.Add(5*time.Second), false), 6 * time.Second, false},
		{beat("n1", s1, false), 6 * time.Second, true},                      // back after 5 s of silence
		{beat("n1", s1, true), 7 * time.Second, false},                      // stops
		{beat("n1", s1, false), 8 * time.Second, true},                      // back after stopping
		{beat("n2", t0.Add(9*time.Second), false), 9 * time.Second, true},   // restarted, same id
		{beat("n2", t0.Add(9*time.Second), false), 10 * time.Second, false}, // beats on
	} {
		if got := bt.heard(step.b, t0.Add(step.at)) != ""; got != step.want {
			t.Errorf("step %d (%s at %s): resync %v, want %v", i, step.b.ID, step.at, got, step.want)
		}
	}
}

func TestRetryBackoff(t *testing.T) {
	for n := 1; n < 40; n++ {
		d := retryDelay(n)
		if d < resyncRetryMin*8/10 || d > resyncRetryMax*12/10 {
			t.Fatalf("retryDelay(%d) = %s", n, d)
		}
	}
	if retryDelay(20) < resyncRetryMax*8/10 {
		t.Fatalf("retryDelay does not reach its cap: %s", retryDelay(20))
	}
	for n, want := range []time.Duration{time.Second, time.Second, time.Second, time.Second, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		if got := attemptTimeout(n, 5*time.Second); got != want {
			t.Errorf("attemptTimeout(%d) = %s, want %s", n, got, want)
		}
	}
}
