package server

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/events"
)

// What a running replica holds, for monitoring (the live pool page, the
// metrics). Reads are of the in-memory view: no store access.

// Scopes are the scopes this replica serves.
func (n *NameServer) Scopes() []string { return n.cfg.Scopes }

// PoolSummaries lists the pools of scope, sorted by name; nil for a scope
// not served.
func (n *NameServer) PoolSummaries(scope string) []PoolSummary {
	v := n.views[scope]
	if v == nil {
		return nil
	}
	return v.summaries()
}

// Pool returns a pool of scope with its PE records, sorted by PE id.
func (n *NameServer) Pool(scope, pool string) (PoolSummary, []events.Record, bool) {
	v := n.views[scope]
	if v == nil {
		return PoolSummary{}, nil, false
	}
	return v.records(pool)
}

// Record returns the record of a live PE once this replica's view has
// applied revision rev (waiting at most wait): a change message can
// arrive before the view shows its revision.
func (n *NameServer) Record(scope, pool, peID string, rev uint64, wait time.Duration) (events.Record, bool) {
	v := n.views[scope]
	if v == nil {
		return events.Record{}, false
	}
	v.waitFor(rev, wait)
	return v.live(events.Key(pool, peID))
}

// WatchChanges calls fn with every change published on the change
// subjects of the replica's scopes, by any replica, until stop is called.
// fn runs on one goroutine per scope.
func (n *NameServer) WatchChanges(fn func(events.Change)) (stop func(), _ error) {
	var subs []*nats.Subscription
	stop = func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
	for _, scope := range n.cfg.Scopes {
		sub, err := n.nc.Subscribe(events.Subject(scope, events.KindChanges, "*"), func(m *nats.Msg) {
			var ch events.Change
			if err := events.Decode(m.Data, &ch); err != nil {
				n.cfg.Logger.Warn("undecodable change message", "subject", m.Subject, "err", err)
				return
			}
			fn(ch)
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("scope %s: change subscription: %w", scope, err)
		}
		subs = append(subs, sub)
	}
	return stop, nil
}

// Ready tells whether the replica serves its scopes now: started, not
// stopped, and connected to NATS.
func (n *NameServer) Ready() error {
	select {
	case <-n.stopped:
		return errors.New("stopped")
	default:
	}
	if !n.nc.IsConnected() {
		return fmt.Errorf("NATS connection %s", n.nc.Status())
	}
	return nil
}
