package monitor

import (
	"testing"
	"time"

	"github.com/rserpool/rsp/events"
)

// TestNameServerStates: rates come from two beats of a replica that is up;
// a replica whose beats stop is silent after 3 s and forgotten after a
// minute; a stopping beat marks it stopped at once; a beat heard twice
// counts once.
func TestNameServerStates(t *testing.T) {
	ns := newNameServers()
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	beat := func(id string, at time.Time, echo uint64, stopping bool) events.NameServerBeat {
		return events.NameServerBeat{ID: id, Scope: "default", Time: at, Resolutions: map[string]uint64{"echo": echo}, Stopping: stopping}
	}
	ns.heard(beat("a", t0, 100, false), t0)
	ns.heard(beat("a", t0.Add(time.Second), 300, false), t0.Add(time.Second))
	ns.heard(beat("a", t0.Add(time.Second), 300, false), t0.Add(time.Second)) // again, through a second subscription
	ns.heard(beat("b", t0, 50, false), t0)
	ns.heard(beat("b", t0.Add(2*time.Second), 10, false), t0.Add(2*time.Second)) // b's pool came back: counts from 0

	list, pools := ns.rates("default", t0.Add(2*time.Second))
	if len(list) != 2 || list[0].ID != "a" || list[0].State != stateUp || list[0].ResolutionsPerS != 200 ||
		list[1].ID != "b" || list[1].ResolutionsPerS != 5 || pools["echo"] != 205 {
		t.Fatalf("rates: %+v %v", list, pools)
	}
	list, _ = ns.rates("default", t0.Add(5*time.Second))
	if list[0].State != stateSilent || list[0].ResolutionsPerS != 0 || list[1].State != stateUp {
		t.Fatalf("after a's beats stopped: %+v", list)
	}
	ns.heard(beat("b", t0.Add(3*time.Second), 20, true), t0.Add(3*time.Second))
	list, pools = ns.rates("default", t0.Add(3*time.Second))
	if list[1].State != stateStopped || pools["echo"] != 200 {
		t.Fatalf("after b's last beat: %+v %v", list, pools)
	}
	if list, _ = ns.rates("default", t0.Add(2*time.Minute)); len(list) != 0 {
		t.Fatalf("replicas gone for a minute still listed: %+v", list)
	}
}
