package rspclient

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/policy"
)

// eventually polls cond until it holds, failing the test after 5 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ids(els []events.Element) []string {
	out := make([]string, len(els))
	for i, e := range els {
		out[i] = e.PEID
	}
	return out
}

func hasID(els []events.Element, id string) bool {
	return slices.ContainsFunc(els, func(e events.Element) bool { return e.PEID == id })
}

// cacheWith returns a cache that follows no pool, fed by hand through a
// merger (as its watch would), for tests of its bookkeeping.
func cacheWith(snap ...events.Change) (*PoolCache, *merger) {
	pc := &PoolCache{pool: "echo", log: slog.New(slog.DiscardHandler)}
	m := newMerger("default", 0)
	for _, ch := range snap {
		m.known[ch.PEID] = peState{rev: ch.Revision, member: true, el: ch.Element}
		m.barrier = max(m.barrier, ch.Revision)
	}
	slices.SortFunc(snap, func(a, b events.Change) int { return cmp.Compare(a.Revision, b.Revision) })
	pc.apply(snap)
	pc.publishIfEmpty()
	return pc, m
}

// feed passes changes through the merger m into the cache, as its watch
// does.
func feed(pc *PoolCache, m *merger, chs ...events.Change) {
	var news []events.Change
	for _, ch := range chs {
		if ch, keep := m.apply(ch); keep {
			news = append(news, ch)
		}
	}
	pc.apply(news)
}

// elemRec is the record of PE id in pool echo as elemChange shows it.
func elemRec(id string, pol events.PolicyParams) events.Record {
	return events.Record{PEID: id, Pool: "echo", Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:1"}}, Policy: pol}
}

func elemChange(op, id string, rev uint64, pol events.PolicyParams) events.Change {
	ch := change(op, id, rev)
	ch.Element = &events.Element{PEID: id, Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:1"}}, Policy: pol}
	return ch
}

var rr = events.PolicyParams{Name: "round_robin"}

func TestCacheBookkeeping(t *testing.T) {
	pc, m := cacheWith(elemChange(events.OpAdd, "b", 2, rr), elemChange(events.OpAdd, "a", 1, rr))
	if got := ids(pc.Members()); !slices.Equal(got, []string{"a", "b"}) || pc.Policy() != "round_robin" || pc.Len() != 2 {
		t.Fatalf("after the snapshot: members %v, policy %q", got, pc.Policy())
	}
	if got := pc.snap.Load().cands; got[0].ID != "a" || got[0].Rev != 1 || got[1].Rev != 2 {
		t.Fatalf("candidates %+v, want a@1, b@2", got)
	}

	// A local failure drops b at once; changes that are no news about b
	// (the merger drops them) do not bring it back, an update does.
	pc.mu.Lock()
	i, _ := pc.find("b")
	pc.members[i].failed = true
	pc.publish()
	pc.mu.Unlock()
	if got := ids(pc.Members()); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("after b failed: %v", got)
	}
	feed(pc, m, elemChange(events.OpAdd, "b", 2, rr), elemChange(events.OpAdd, "c", 3, rr))
	if got := ids(pc.Members()); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("after a stale add of b and the add of c: %v", got)
	}
	// A resync keeps b dropped: b's renewal (the same element at a later
	// revision) is no news about it.
	pc.apply(m.sync(poolRead{live: []snapEntry{{elemRec("a", rr), 1, 1}, {elemRec("b", rr), 7, 7}, {elemRec("c", rr), 3, 3}}}, 0))
	if got := ids(pc.Members()); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("after a resync: %v", got)
	}
	feed(pc, m, elemChange(events.OpUpdate, "b", 8, rr))
	if got := ids(pc.Members()); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("after an update of b: %v", got)
	}

	// Removes drop members; an empty pool forgets its policy, and the next
	// first member sets it.
	feed(pc, m, change(events.OpRemove, "a", 9), change(events.OpRemove, "b", 10), change(events.OpRemove, "c", 11))
	if pc.Len() != 0 || pc.Policy() != "" || pc.Pick(3, nil) != nil {
		t.Fatalf("after removing all: members %v, policy %q", ids(pc.Members()), pc.Policy())
	}
	feed(pc, m, elemChange(events.OpAdd, "x", 12, events.PolicyParams{Name: "random"}))
	if pc.Policy() != "random" || pc.Len() != 1 {
		t.Fatalf("after a new first member: policy %q, members %v", pc.Policy(), ids(pc.Members()))
	}
	// The only member re-registers with another policy: a new picker.
	old := pc.snap.Load().picker
	feed(pc, m, elemChange(events.OpUpdate, "x", 13, rr))
	if s := pc.snap.Load(); s.policy != "round_robin" || s.picker == old {
		t.Fatalf("after a policy change: policy %q, picker rebuilt %v", s.policy, s.picker != old)
	}
	// A policy this program does not know is picked with the default.
	feed(pc, m, elemChange(events.OpUpdate, "x", 14, events.PolicyParams{Name: "from_the_future"}))
	if pc.Policy() != "from_the_future" || !slices.Equal(ids(pc.Pick(1, nil)), []string{"x"}) {
		t.Fatalf("unknown policy: %q, pick %v", pc.Policy(), pc.Pick(1, nil))
	}
}

func TestCachePickAllocs(t *testing.T) {
	var snap []events.Change
	for i := range 500 {
		snap = append(snap, elemChange(events.OpAdd, fmt.Sprintf("pe-%03d", i), uint64(i+1), rr))
	}
	pc, _ := cacheWith(snap...)
	if got := pc.Pick(0, nil); got != nil {
		t.Fatalf("Pick(0) = %v", got)
	}
	if got := pc.Pick(1000, nil); len(got) != 500 {
		t.Fatalf("Pick(1000) gave %d of 500", len(got))
	}
	if raceEnabled {
		return
	}
	if a := testing.AllocsPerRun(1000, func() { pc.Pick(3, nil) }); a > 1 {
		t.Fatalf("Pick allocates %v times, want the result slice only", a)
	}
}

func TestCachePickHint(t *testing.T) {
	var snap []events.Change
	for i, zone := range []string{"a", "b", "a", "b"} {
		ch := elemChange(events.OpAdd, fmt.Sprint("p", i), uint64(i+1), rr)
		ch.Element.Meta = map[string]string{"zone": zone}
		snap = append(snap, ch)
	}
	pc, _ := cacheWith(snap...)
	for range 4 {
		got := pc.Pick(3, map[string]string{policy.HintZone: "b"})
		if len(got) != 3 || got[0].Meta["zone"] != "b" || got[1].Meta["zone"] != "b" || got[2].Meta["zone"] != "a" {
			t.Fatalf("Pick with zone b: %v, want the two zone-b PEs first", ids(got))
		}
	}
	if raceEnabled {
		return
	}
	hint := map[string]string{policy.HintZone: "a"}
	if a := testing.AllocsPerRun(1000, func() { pc.Pick(2, hint) }); a > 1 {
		t.Fatalf("Pick with a hint allocates %v times, want the result slice only", a)
	}
}

func TestCacheConcurrentPicks(t *testing.T) {
	pc, m := cacheWith(elemChange(events.OpAdd, "a", 1, rr), elemChange(events.OpAdd, "b", 2, rr))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 2000 {
				for _, e := range pc.Pick(3, nil) {
					if e.PEID == "" {
						t.Error("empty element")
						return
					}
				}
			}
		})
	}
	for rev := uint64(3); rev < 200; rev++ {
		id := fmt.Sprint("p", rev%7)
		if rev%3 == 0 {
			feed(pc, m, change(events.OpRemove, id, rev))
		} else {
			feed(pc, m, elemChange(events.OpAdd, id, rev, rr))
		}
	}
	wg.Wait()
}

// TestCacheRoundRobin follows a round-robin pool through adds, a
// deregistration, an expiry and a failure report, against a real name
// server.
func TestCacheRoundRobin(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pe := newClient(t, connect(t, s))
	pu := newClient(t, connect(t, s))
	// A live address: the name server's check of a reported PE passes.
	tr := []events.Transport{{Proto: "tcp", Addr: liveAddr(t)}}
	regs := map[string]*Registration{}
	for _, id := range []string{"a", "b", "c"} {
		r, err := pe.Register(ctx, "rr", PE{ID: id, Transports: tr, Lifetime: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		regs[id] = r
	}

	pc, err := pu.Cache(context.Background(), "rr")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if got := ids(pc.Members()); !slices.Equal(got, []string{"a", "b", "c"}) || pc.Len() != 3 || pc.Policy() != "round_robin" {
		t.Fatalf("cache holds %v with policy %q, want a, b, c round_robin", got, pc.Policy())
	}

	// The same selections as the policy package makes of the same
	// members: overlapping answers (a,b), (b,c), (c,a), ...
	b, _ := policy.Get("round_robin")
	ref := b.Build()
	cands := []policy.Candidate{{ID: "a"}, {ID: "b"}, {ID: "c"}}
	for i := range 7 {
		var want []string
		for _, k := range ref.Pick(nil, cands, 2, nil) {
			want = append(want, cands[k].ID)
		}
		if got := ids(pc.Pick(2, nil)); !slices.Equal(got, want) {
			t.Fatalf("selection %d: %v, want %v", i, got, want)
		}
	}
	if got := pc.Pick(10, nil); len(got) != 3 {
		t.Fatalf("Pick(10) of 3 PEs: %v", ids(got))
	}

	// A new PE appears, a deregistered one disappears.
	if _, err := pe.Register(ctx, "rr", PE{ID: "d", Transports: tr, Lifetime: time.Second}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "d in the cache", func() bool { return hasID(pc.Members(), "d") })
	if err := regs["b"].Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b out of the cache", func() bool { return !hasID(pc.Members(), "b") })

	// A failure report drops c at once, and reaches the event stream
	// signed by the PU.
	reports := make(chan *nats.Msg, 4)
	watcher := connect(t, s)
	if _, err := watcher.ChanSubscribe(events.Subject(events.DefaultScope, events.KindFailure, "rr"), reports); err != nil {
		t.Fatal(err)
	}
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := pc.ReportFailure(ctx, "c", "connect refused"); err != nil {
		t.Fatal(err)
	}
	// Dropped at once, with no wait for a change: the name server does
	// not take c out for one report.
	if hasID(pc.Members(), "c") || pc.Len() != 2 {
		t.Fatalf("after reporting c: %v", ids(pc.Members()))
	}
	select {
	case m := <-reports:
		var rep events.FailureReport
		signer, err := events.VerifyEvent(m)
		if err != nil || signer != pu.PublicKey() || events.Decode(m.Data, &rep) != nil || rep.PEID != "c" || rep.Reason != "connect refused" {
			t.Fatalf("report %s signed by %s (%v), want c's, by %s", m.Data, signer, err, pu.PublicKey())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no failure report on the stream's subject")
	}
	// c renews (every 1/3 s) without news: it stays dropped ...
	time.Sleep(1200 * time.Millisecond)
	for range 10 {
		if got := pc.Pick(10, nil); hasID(got, "c") || len(got) != 2 {
			t.Fatalf("after c failed: picked %v, want a and d", ids(got))
		}
	}
	// ... until an update of it arrives.
	if err := regs["c"].UpdateLoad(ctx, 0.4); err != nil {
		t.Fatal(err)
	}
	eventually(t, "c back after its update", func() bool { return hasID(pc.Members(), "c") })

	// A PE whose process hangs expires out of the cache.
	hung := connect(t, s)
	hc := newClient(t, hung)
	if _, err := hc.Register(ctx, "rr", PE{ID: "h", Transports: tr, Lifetime: time.Second}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "h in the cache", func() bool { return hasID(pc.Members(), "h") })
	hung.Close()
	eventually(t, "h expired out of the cache", func() bool { return !hasID(pc.Members(), "h") })
	if got := ids(pc.Members()); !slices.Equal(got, []string{"a", "c", "d"}) {
		t.Fatalf("left: %v, want a, c, d", got)
	}
}

// TestCacheLeastUsed picks the least loaded PE, and follows load updates.
func TestCacheLeastUsed(t *testing.T) {
	if _, ok := policy.Get("least_used"); !ok {
		t.Skip("policy least_used is not registered yet")
	}
	s := startNATS(t)
	startNameServer(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pe := newClient(t, connect(t, s))
	pu := newClient(t, connect(t, s))
	// A live address: the name server's check of a reported PE passes.
	tr := []events.Transport{{Proto: "tcp", Addr: liveAddr(t)}}
	regs := map[string]*Registration{}
	for id, load := range map[string]float64{"a": 0.5, "b": 0.2, "c": 0.8} {
		r, err := pe.Register(ctx, "lu", PE{ID: id, Transports: tr, Policy: events.PolicyParams{Name: "least_used", Load: load}})
		if err != nil {
			t.Fatal(err)
		}
		regs[id] = r
	}
	pc, err := pu.Cache(ctx, "lu")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if pc.Policy() != "least_used" {
		t.Fatalf("policy %q", pc.Policy())
	}
	for range 3 {
		if got := ids(pc.Pick(3, nil)); !slices.Equal(got, []string{"b", "a", "c"}) {
			t.Fatalf("picked %v, want b, a, c (by load)", got)
		}
	}
	if err := regs["c"].UpdateLoad(ctx, 0.05); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cache sees c's load 0.05", func() bool {
		m := pc.Members()
		i := slices.IndexFunc(m, func(e events.Element) bool { return e.PEID == "c" })
		return i >= 0 && m[i].Policy.Load == 0.05
	})
	if got := ids(pc.Pick(1, nil)); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("picked %v, want c (now least used)", got)
	}
	if got := ids(pc.Pick(5, nil)); !slices.Equal(got, []string{"c", "b", "a"}) {
		t.Fatalf("Pick(5) of 3: %v, want c, b, a", got)
	}
}

// TestCacheEmptyPoolAndResync starts a cache on a pool without members,
// repairs a change the cache missed by a resync, and closes it.
func TestCacheEmptyPoolAndResync(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pu := newClient(t, connect(t, s))
	pc, err := pu.Cache(ctx, "later", WithResync(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if pc.Len() != 0 || pc.Policy() != "" || pc.Pick(3, nil) != nil || pc.Pool() != "later" {
		t.Fatalf("empty pool: %d members, policy %q", pc.Len(), pc.Policy())
	}
	pe := newClient(t, connect(t, s))
	if _, err := pe.Register(ctx, "later", PE{ID: "p1", Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:1"}}, Policy: events.PolicyParams{Name: "random"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "p1 in the cache", func() bool { return pc.Len() == 1 })
	if pc.Policy() != "random" {
		t.Fatalf("policy %q, want random", pc.Policy())
	}

	// A member the cache holds but the pool does not (as when a remove
	// was lost while the connection was down) goes at the next resync:
	// an add announced (at a revision the bucket has passed) whose PE the
	// bucket does not hold.
	ghost := elemChange(events.OpAdd, "zz-ghost", lastRevision(t, pe), rr)
	ghost.Pool = "later"
	if err := pe.nc.Publish(events.Subject(events.DefaultScope, events.KindChanges, "later"), events.Marshal(ghost)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the ghost in the cache", func() bool { return hasID(pc.Members(), "zz-ghost") })
	eventually(t, "the ghost gone after a resync", func() bool { return pc.Len() == 1 && !hasID(pc.Members(), "zz-ghost") })

	pc.Close()
	pc.Close()
	select {
	case <-pc.Done():
	default:
		t.Fatal("Done open after Close")
	}
	if got := ids(pc.Pick(1, nil)); !slices.Equal(got, []string{"p1"}) {
		t.Fatalf("after Close: %v, want the last members", got)
	}

	// Ending the ctx stops a cache too; bad pool handles are refused.
	cctx, ccancel := context.WithCancel(ctx)
	pc2, err := pu.Cache(cctx, "later")
	if err != nil {
		t.Fatal(err)
	}
	ccancel()
	select {
	case <-pc2.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("cache still running after its ctx ended")
	}
	if _, err := pu.Cache(ctx, "bad pool"); err == nil {
		t.Fatal("a bad pool handle was taken")
	}
}

// BenchmarkCache compares a local selection (PoolCache.Pick) with a
// resolution by a name server (Client.Resolve) on a 500-PE pool.
func BenchmarkCache(b *testing.B) {
	s := startNATS(b)
	startNameServer(b, s)
	ctx := context.Background()
	pe := newClient(b, connect(b, s))
	const size = 500
	var wg sync.WaitGroup
	errs := make(chan error, size)
	ids := make(chan int, size)
	for i := range size {
		ids <- i
	}
	close(ids)
	for range 16 {
		wg.Go(func() {
			for i := range ids {
				// A long lifetime: no renewals during the measurement.
				_, err := pe.Register(ctx, "big", PE{ID: fmt.Sprintf("pe-%03d", i), Lifetime: time.Hour,
					Transports: []events.Transport{{Proto: "tcp", Addr: fmt.Sprintf("10.0.%d.%d:7000", i/250, i%250)}}})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	pu := newClient(b, connect(b, s))
	pc, err := pu.Cache(ctx, "big")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	if pc.Len() != size {
		b.Fatalf("cache holds %d PEs, want %d", pc.Len(), size)
	}

	b.Run("PoolCache.Pick", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if len(pc.Pick(events.DefaultMax, nil)) != events.DefaultMax {
				b.Fatal("short pick")
			}
		}
	})
	b.Run("Client.Resolve", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ans, err := pu.Resolve(ctx, "big", events.ResolveRequest{})
			if err != nil || len(ans.Elements) != events.DefaultMax {
				b.Fatal(ans, err)
			}
		}
	})
}
