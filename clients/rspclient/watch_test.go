package rspclient

import (
	"fmt"
	"testing"

	"github.com/rserpool/rsp/events"
)

func rec(pool, id string) events.Record {
	return events.Record{PEID: id, Pool: pool, Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:1"}}, Policy: events.PolicyParams{Name: "round_robin"}}
}

func change(op, id string, rev uint64) events.Change {
	reason := map[string]string{events.OpAdd: events.ReasonRegistered, events.OpUpdate: events.ReasonUpdated, events.OpRemove: events.ReasonDeregistered}[op]
	return events.Change{Scope: "default", Pool: "echo", Revision: rev, Op: op, PEID: id, Reason: reason}
}

func TestMergerSnapshot(t *testing.T) {
	m := newMerger("s1", 0)
	got := m.snapshot([]snapEntry{{rec("echo", "a"), 5, 5}, {rec("echo", "b"), 9, 9}})
	if len(got) != 2 {
		t.Fatalf("snapshot gave %d changes, want 2", len(got))
	}
	for i, want := range []struct {
		id  string
		rev uint64
	}{{"a", 5}, {"b", 9}} {
		c := got[i]
		if c.Op != events.OpAdd || c.Reason != events.ReasonRegistered || c.PEID != want.id ||
			c.Revision != want.rev || c.Scope != "s1" || c.Pool != "echo" || c.Element == nil || c.Element.PEID != want.id {
			t.Errorf("snapshot change %d = %+v", i, c)
		}
	}
}

func TestMergerApply(t *testing.T) {
	type step struct {
		ch   events.Change
		keep bool
	}
	for _, tc := range []struct {
		name    string
		barrier uint64 // stream's last revision before the snapshot
		snap    []snapEntry
		steps   []step
	}{
		{
			name: "changes reflected by the snapshot are dropped",
			snap: []snapEntry{{rec("echo", "a"), 10, 10}, {rec("echo", "b"), 12, 12}},
			steps: []step{
				{change(events.OpAdd, "a", 10), false},    // a's own add
				{change(events.OpUpdate, "b", 11), false}, // older than b's state
				{change(events.OpUpdate, "b", 12), false},
				{change(events.OpUpdate, "a", 13), true}, // news
				{change(events.OpUpdate, "a", 13), false},
				{change(events.OpRemove, "b", 14), true},
				{change(events.OpRemove, "b", 15), false}, // no longer a member
				{change(events.OpAdd, "b", 16), true},     // back again
			},
		},
		{
			name:    "a PE that came and went before the snapshot stays unseen",
			barrier: 20,
			snap:    []snapEntry{{rec("echo", "a"), 3, 3}},
			steps: []step{
				{change(events.OpAdd, "x", 15), false},    // before the barrier
				{change(events.OpRemove, "x", 18), false}, // not a member
				{change(events.OpRemove, "a", 19), false}, // before the barrier: the snapshot has the later state
				{change(events.OpAdd, "y", 21), true},
				{change(events.OpRemove, "y", 22), true},
			},
		},
		{
			name: "remove of a PE not in the set is dropped, removes after adds kept",
			snap: nil,
			steps: []step{
				{change(events.OpRemove, "gone", 4), false},
				{change(events.OpAdd, "n", 5), true},
				{change(events.OpUpdate, "n", 6), true},
				{change(events.OpRemove, "n", 7), true},
				{change(events.OpUpdate, "n", 7), false}, // stale
			},
		},
		{
			name: "snapshot revisions raise the barrier",
			snap: []snapEntry{{rec("echo", "a"), 30, 30}},
			steps: []step{
				{change(events.OpAdd, "z", 25), false}, // z was added and removed before rev 30
				{change(events.OpRemove, "z", 27), false},
				{change(events.OpUpdate, "a", 31), true},
			},
		},
		{
			name: "unknown op is dropped",
			snap: []snapEntry{{rec("echo", "a"), 1, 1}},
			steps: []step{
				{events.Change{Pool: "echo", Revision: 2, Op: "explode", PEID: "a"}, false},
				{change(events.OpRemove, "a", 3), true},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMerger("default", tc.barrier)
			m.snapshot(tc.snap)
			for i, s := range tc.steps {
				got, keep := m.apply(s.ch)
				if keep != s.keep {
					t.Errorf("step %d %s %s@%d: keep = %v, want %v", i, s.ch.Op, s.ch.PEID, s.ch.Revision, keep, s.keep)
				}
				if keep && got.Revision != s.ch.Revision {
					t.Errorf("step %d changed the change: %+v", i, got)
				}
			}
		})
	}
}

// TestMergerConverges checks the set a watcher builds against the real
// final membership for every point at which the snapshot may be taken.
func TestMergerConverges(t *testing.T) {
	history := []events.Change{
		change(events.OpAdd, "a", 1), change(events.OpAdd, "b", 2), change(events.OpUpdate, "a", 3),
		change(events.OpRemove, "b", 4), change(events.OpAdd, "c", 5), change(events.OpAdd, "b", 6),
		change(events.OpRemove, "a", 7), change(events.OpUpdate, "c", 8), change(events.OpRemove, "c", 9),
		change(events.OpAdd, "a", 10),
	}
	final := map[string]bool{"a": true, "b": true}
	// Snapshot taken after the first k changes; the subscription started at
	// s ≤ k, so changes s.. are buffered (some of them already reflected).
	for k := 0; k <= len(history); k++ {
		for s := 0; s <= k; s++ {
			state := map[string]uint64{}
			for _, c := range history[:k] {
				if c.Op == events.OpRemove {
					delete(state, c.PEID)
				} else {
					state[c.PEID] = c.Revision
				}
			}
			var snap []snapEntry
			for id, rev := range state {
				snap = append(snap, snapEntry{rec("echo", id), rev, rev})
			}
			m := newMerger("default", 0)
			set := map[string]bool{}
			for _, c := range m.snapshot(snap) {
				set[c.PEID] = true
			}
			for _, c := range history[s:] {
				c, keep := m.apply(c)
				if !keep {
					continue
				}
				if c.Op == events.OpRemove {
					if !set[c.PEID] {
						t.Fatalf("k=%d s=%d: remove of non-member %s", k, s, c.PEID)
					}
					delete(set, c.PEID)
				} else {
					set[c.PEID] = true
				}
			}
			if fmt.Sprint(set) != fmt.Sprint(final) {
				t.Errorf("k=%d s=%d: watcher ends with %v, want %v", k, s, set, final)
			}
		}
	}
}

func TestQueue(t *testing.T) {
	q := newQueue()
	for i := range 100 {
		q.push(events.Change{Revision: uint64(i)})
	}
	got, closed := q.drain(nil)
	if len(got) != 100 || closed || got[0].Revision != 0 || got[99].Revision != 99 {
		t.Fatalf("drain = %d changes, closed %v", len(got), closed)
	}
	select {
	case <-q.wake:
	default:
		t.Fatal("no wake-up after a push")
	}
	if got, _ := q.drain(got[:0]); len(got) != 0 {
		t.Fatalf("second drain = %d changes", len(got))
	}
	q.close()
	if _, closed := q.drain(nil); !closed {
		t.Fatal("drain after close says open")
	}
}

// TestMergerSync turns reads of the pool into changes: renewals are none,
// removals carry their marker's reason, members the bucket no longer
// holds go as expired, and a resumption delivers only what is newer than
// its revision.
func TestMergerSync(t *testing.T) {
	m := newMerger("default", 0)
	m.pool = "echo"
	str := func(chs []events.Change) string {
		var s []string
		for _, c := range chs {
			s = append(s, fmt.Sprintf("%s %s %s@%d", c.Op, c.PEID, c.Reason, c.Revision))
		}
		return fmt.Sprint(s)
	}
	first := m.sync(poolRead{live: []snapEntry{{rec("echo", "a"), 3, 3}, {rec("echo", "b"), 4, 4}, {rec("echo", "c"), 5, 5}},
		removed: []removal{{id: "old", rev: 2, reason: events.ReasonFailed}}}, 0)
	if got := str(first); got != "[add a registered@3 add b registered@4 add c registered@5]" {
		t.Fatalf("first read: %s", got)
	}
	// a renewed (same element, later revision), b changed, c removed
	// (failed), d came, and e came and went; x went without a trace.
	m.known["x"] = peState{rev: 6, member: true}
	changed := rec("echo", "b")
	changed.Policy.Load = 0.5
	diff := m.sync(poolRead{live: []snapEntry{{rec("echo", "a"), 9, 9}, {changed, 10, 10}, {rec("echo", "d"), 12, 12}},
		removed: []removal{{id: "c", rev: 11, reason: events.ReasonFailed}, {id: "e", rev: 13, reason: events.ReasonExpired}}, upTo: 14}, 0)
	if got := str(diff); got != "[update b updated@10 add d registered@12 remove c failed@11 remove x expired@14]" {
		t.Fatalf("resync: %s", got)
	}
	if m.barrier != 14 {
		t.Fatalf("barrier %d, want 14", m.barrier)
	}
	// The same read again brings nothing.
	if again := m.sync(poolRead{live: []snapEntry{{rec("echo", "a"), 9, 9}, {changed, 10, 10}, {rec("echo", "d"), 12, 12}}, upTo: 14}, 0); len(again) != 0 {
		t.Fatalf("the same read again: %s", str(again))
	}
	// A member added by a change after the read began is not taken for gone.
	if _, keep := m.apply(change(events.OpAdd, "late", 20)); !keep {
		t.Fatal("late add dropped")
	}
	if diff := m.sync(poolRead{live: []snapEntry{{rec("echo", "a"), 9, 9}, {changed, 10, 10}, {rec("echo", "d"), 12, 12}}, upTo: 15}, 0); len(diff) != 0 {
		t.Fatalf("a read that began before the late add: %s", str(diff))
	}

	// Resuming after revision 10, joined the pool after revision 10 or
	// not: a PE unchanged since is the reader's already.
	r := poolRead{live: []snapEntry{{rec("echo", "a"), 9, 9}, {rec("echo", "b"), 11, 2}, {rec("echo", "n"), 12, 12}},
		removed: []removal{{id: "c", rev: 8, reason: events.ReasonFailed}, {id: "d", rev: 13, reason: events.ReasonDeregistered}}, upTo: 13}
	m2 := newMerger("default", 0)
	m2.pool = "echo"
	if got := str(m2.sync(r, 10)); got != "[update b updated@11 add n registered@12 remove d deregistered@13]" {
		t.Fatalf("resumed: %s", got)
	}
	if st := m2.known["a"]; !st.member || st.rev != 9 {
		t.Fatalf("a after the resumption: %+v, want a member at 9", st)
	}
}
