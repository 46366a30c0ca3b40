package rspclient

import (
	"errors"
	"testing"
)

// TestStateChangedKeepsTheLatest: a listener that reads nothing gets the
// state at the call, then loses the oldest changes beyond its buffer,
// never the latest; Ended closes its channel, and a listener that comes
// after the end gets Ended on a closed channel.
func TestStateChangedKeepsTheLatest(t *testing.T) {
	r := &Registration{done: make(chan struct{})}
	r.setState(Registered, nil)
	if r.State() != Registered {
		t.Fatalf("State %s, want registered", r.State())
	}
	ch := r.StateChanged()
	failing := errors.New("no answer")
	for range 2 * stateBuffer {
		r.mu.Lock()
		r.setState(Retrying, failing)
		if r.setState(Retrying, failing) {
			t.Error("setState to the same state reported a change")
		}
		r.setState(Registered, nil)
		r.mu.Unlock()
	}
	r.mu.Lock()
	r.setState(Lost, ErrLost)
	r.mu.Unlock()
	r.finish(ErrDeregistered)
	r.mu.Lock()
	if r.setState(Registered, nil) {
		t.Error("a state after Ended")
	}
	r.mu.Unlock()

	var got []StateChange
	for sc := range ch {
		got = append(got, sc)
	}
	if len(got) != stateBuffer {
		t.Fatalf("%d changes buffered, want %d", len(got), stateBuffer)
	}
	last, lost := got[len(got)-1], got[len(got)-2]
	if last.State != Ended || !errors.Is(last.Err, ErrDeregistered) || lost.State != Lost || !errors.Is(lost.Err, ErrLost) {
		t.Errorf("last changes %+v, %+v; want lost (ErrLost), ended (ErrDeregistered)", lost, last)
	}
	for i := 1; i < len(got); i++ {
		if got[i].At.Before(got[i-1].At) {
			t.Errorf("change %d at %s, before the one earlier", i, got[i].At)
		}
	}

	late := r.StateChanged()
	if sc, ok := <-late; !ok || sc.State != Ended {
		t.Errorf("late listener got %+v (%v), want ended", sc, ok)
	}
	if _, ok := <-late; ok {
		t.Error("late listener's channel not closed")
	}
	if r.State() != Ended || !errors.Is(r.Err(), ErrDeregistered) {
		t.Errorf("State %s, Err %v", r.State(), r.Err())
	}
	for s, want := range map[State]string{Registered: "registered", Retrying: "retrying", Lost: "lost", Ended: "ended", 0: "State(0)"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", int(s), s.String(), want)
		}
	}
}
