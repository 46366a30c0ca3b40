package server

import (
	"context"
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
	return watch(n, "change", func(scope string) string { return events.Subject(scope, events.KindChanges, "*") }, fn)
}

// WatchNameServers calls fn with every beat of every name-server replica
// of the replica's scopes (itself included), until stop is called. fn
// runs on one goroutine per scope.
func (n *NameServer) WatchNameServers(fn func(events.NameServerBeat)) (stop func(), _ error) {
	return watch(n, "name-server beat", events.NameServersSubject, fn)
}

// watch subscribes to subject(scope) for each scope and calls fn with each
// message decoded.
func watch[T any](n *NameServer, what string, subject func(scope string) string, fn func(T)) (stop func(), _ error) {
	var subs []*nats.Subscription
	stop = func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
	for _, scope := range n.cfg.Scopes {
		sub, err := n.nc.Subscribe(subject(scope), func(m *nats.Msg) {
			var v T
			if err := events.Decode(m.Data, &v); err != nil {
				n.cfg.Logger.Warn("undecodable "+what+" message", "subject", m.Subject, "err", err)
				return
			}
			fn(v)
		})
		if err != nil {
			stop()
			return nil, fmt.Errorf("scope %s: %s subscription: %w", scope, what, err)
		}
		subs = append(subs, sub)
	}
	return stop, nil
}

// beatInterval is how often a replica announces itself on
// events.NameServerSubject.
const beatInterval = time.Second

// beat announces the replica in each scope every beatInterval until ctx
// ends.
func (n *NameServer) beat(ctx context.Context) {
	t := time.NewTicker(beatInterval)
	defer t.Stop()
	for {
		n.publishBeats(false)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// publishBeats announces the replica in each scope with its counts;
// stopping marks its last beat, after which no other goes out.
func (n *NameServer) publishBeats(stopping bool) {
	n.beatMu.Lock()
	defer n.beatMu.Unlock()
	select {
	case <-n.stopped:
		if !stopping {
			return
		}
	default:
	}
	now := time.Now().UTC()
	for _, scope := range n.cfg.Scopes {
		b := events.NameServerBeat{ID: n.cfg.ID, Scope: scope, Time: now, StartedAt: n.started, Key: n.PublicKey(),
			Resolutions: map[string]uint64{}, Stopping: stopping}
		for _, p := range n.views[scope].summaries() {
			b.Pools++
			b.PEs += p.Size
			if p.Resolutions > 0 { // absent means 0: a beat stays small with many idle pools
				b.Resolutions[p.Pool] = p.Resolutions
			}
		}
		if err := n.nc.Publish(events.NameServerSubject(scope, subjectToken(n.cfg.ID)), events.Marshal(b)); err != nil {
			n.cfg.Logger.Debug("name-server beat not sent", "scope", scope, "err", err)
		}
	}
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
