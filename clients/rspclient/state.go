package rspclient

import (
	"fmt"
	"time"
)

// State is where a Registration stands. It changes as renewals succeed or
// fail; Ended is final.
type State int

const (
	// Registered: the last registration or renewal was accepted.
	Registered State = iota + 1
	// Retrying: renewals fail for a reason retrying can mend (no name
	// server answers, the event stream has no leader, the connection is
	// down), and the lifetime of the last accepted one has not run out:
	// the PE is still in the name space. The Registration keeps trying,
	// with backoff.
	Retrying
	// Lost: renewals failed until the lifetime of the last accepted one
	// ran out. The name servers may have taken the PE out (they do not
	// while they cannot store renewals, so after an outage of the name
	// servers or of the event stream it is usually still there). The
	// Registration keeps registering again, with backoff, for as long as
	// it takes: it is Registered once one gets through. Lost always comes
	// after Retrying, even when the attempt that failed was the last the
	// lifetime left room for.
	Lost
	// Ended: the registration is over, Done is closed and Err says why:
	// deregistered, or refused for a reason retrying cannot change.
	Ended
)

func (s State) String() string {
	switch s {
	case Registered:
		return "registered"
	case Retrying:
		return "retrying"
	case Lost:
		return "lost"
	case Ended:
		return "ended"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// StateChange is a Registration's new state, as StateChanged delivers it.
type StateChange struct {
	State State
	// Err is why: the failed attempt that made it Retrying; for Lost an
	// error wrapping ErrLost and the last attempt's error; for Ended the
	// Registration's Err; nil for Registered.
	Err error
	// At is when the Registration entered the state.
	At time.Time
}

// stateBuffer is how many changes a StateChanged channel holds unread;
// beyond, the oldest unread one is dropped.
const stateBuffer = 8

// State is the registration's current state.
func (r *Registration) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state.State
}

// StateChanged returns a channel that receives the registration's current
// state at once and then each change, in order, until it ends: after Ended
// it is closed. It holds a few changes unread; a receiver that lags
// further loses the oldest ones, never the latest. Each call makes a new
// channel.
func (r *Registration) StateChanged() <-chan StateChange {
	ch := make(chan StateChange, stateBuffer)
	r.mu.Lock()
	defer r.mu.Unlock()
	ch <- r.state
	if r.state.State == Ended {
		close(ch)
	} else {
		r.listeners = append(r.listeners, ch)
	}
	return ch
}

// setState moves to state s (a no-op when the registration is in s
// already, or has ended) and tells the listeners; it reports whether the
// state changed. The caller holds r.mu.
func (r *Registration) setState(s State, err error) bool {
	if r.state.State == s || r.state.State == Ended {
		return false
	}
	r.state = StateChange{State: s, Err: err, At: time.Now()}
	for _, ch := range r.listeners {
		// Only setState sends, under r.mu: once an unread change is
		// dropped there is room.
		select {
		case ch <- r.state:
		default:
			select {
			case <-ch:
			default:
			}
			ch <- r.state
		}
		if s == Ended {
			close(ch)
		}
	}
	if s == Ended {
		r.listeners = nil
	}
	return true
}
