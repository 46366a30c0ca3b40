package monitor

import (
	"fmt"
	"testing"
	"time"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/server"
)

func TestMirrorReconcile(t *testing.T) {
	rec := func(id string, load float64) events.Record {
		return events.Record{PEID: id, Pool: "p", Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:1"}},
			Policy: events.PolicyParams{Name: "round_robin", Load: load}}
	}
	k := poolKey{"default", "p"}
	view := func(rev uint64, recs ...events.Record) map[poolKey]viewPool {
		if len(recs) == 0 {
			return map[poolKey]viewPool{}
		}
		return map[poolKey]viewPool{k: {sum: server.PoolSummary{Pool: "p", Policy: "round_robin", Revision: rev}, recs: recs}}
	}
	str := func(msgs []changeMsg) string {
		var s []string
		for _, m := range msgs {
			s = append(s, fmt.Sprintf("%s %s %s@%d rec=%v", m.Change.Op, m.Change.PEID, m.Change.Reason, m.Change.Revision, m.Record != nil))
		}
		return fmt.Sprint(s)
	}
	t0 := time.Unix(1000, 0)
	mr := newMirror()
	if got := mr.reconcile(view(10, rec("a", 0), rec("b", 0)), t0); got != nil {
		t.Fatalf("filling: %s", str(got))
	}
	// A change sent, the view agrees: nothing.
	rc, ra := rec("c", 0), rec("a", 0.5)
	el := rc.Element()
	mr.sent(events.Change{Scope: "default", Pool: "p", Revision: 11, Op: events.OpAdd, PEID: "c", Element: &el})
	if got := mr.reconcile(view(11, rec("a", 0), rec("b", 0), rec("c", 0)), t0.Add(200*time.Millisecond)); got != nil {
		t.Fatalf("in line: %s", str(got))
	}
	// Missed: b removed, d added, a updated. Not before the grace ...
	v := view(20, rec("a", 0.5), rec("c", 0), rec("d", 0))
	if got := mr.reconcile(v, t0.Add(400*time.Millisecond)); got != nil {
		t.Fatalf("before the grace: %s", str(got))
	}
	// ... except what the change messages then bring.
	el = ra.Element()
	mr.sent(events.Change{Scope: "default", Pool: "p", Revision: 18, Op: events.OpUpdate, PEID: "a", Element: &el})
	got := mr.reconcile(v, t0.Add(400*time.Millisecond+reconcileGrace))
	if s := str(got); s != "[add d registered@20 rec=true remove b expired@20 rec=false]" {
		t.Fatalf("after the grace: %s", s)
	}
	if got := mr.reconcile(v, t0.Add(time.Second)); got != nil {
		t.Fatalf("again: %s", str(got))
	}
	// A difference that goes away within the grace is forgotten.
	mr.reconcile(view(21, rec("a", 0.5), rec("c", 0)), t0.Add(1100*time.Millisecond)) // d seems gone
	if got := mr.reconcile(v, t0.Add(2*time.Second)); got != nil || len(mr.odd) != 0 {
		t.Fatalf("a passing difference: %s, odd %v", str(got), mr.odd)
	}
	// The pool gone entirely: each removal just above what the page has.
	mr.reconcile(view(0), t0.Add(3*time.Second))
	if s := str(mr.reconcile(view(0), t0.Add(4*time.Second))); s != "[remove a expired@19 rec=false remove c expired@12 rec=false remove d expired@21 rec=false]" {
		t.Fatalf("pool gone: %s", s)
	}
	mr.off()
	if mr.on || len(mr.pools) != 0 {
		t.Fatal("off kept the mirror")
	}
}
