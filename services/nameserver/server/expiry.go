package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
)

// Expiry. A PE whose lifetime ran out unrenewed leaves the name space with
// reason "expired". The name servers decide that, not the bucket's per-key
// TTL: a TTL runs on whatever happens to the path a renewal takes, so a
// leader election of RSP_EVENTS or of the bucket (seconds: raft's election
// timeout is 4-9 s after a crash), or all name servers being down, would
// expire every PE while none of them could renew. So records carry no TTL,
// and a lifetime only runs while renewals can be stored:
//
//   - Each replica probes, every probeInterval, what a renewal needs: the
//     stream RSP_EVENTS, the scope's shared events consumer and the scope's
//     bucket must answer and have a leader, no event of the scope stored
//     more than maxEventAge ago may still wait to be applied, and its own
//     NATS connection must be up. A replica whose own store write fails
//     holds at once (registrar.handle). Until a probe has
//     passed, and whenever one fails, the replica holds: heldSince is set
//     to now.
//   - A PE's deadline is max(updated_at, heldSince) + lifetime. So after
//     any outage (an election, a lost node, a name-server restart, the
//     replica's own reconnect) every PE has a fresh lifetime, counted from
//     its end, to renew in.
//   - Every sweepInterval, while the last probe passed, the replica removes
//     the PEs past their deadline: a purge with compare-and-set on the
//     revision it read (so of two replicas, one removes and announces), the
//     remove change with reason "expired", a log line. Resolution leaves
//     out a PE past its deadline even before it is swept.
//
// PEs that died while no name server ran are removed (and announced) one
// lifetime after the first replica is back and caught up with the events
// stored meanwhile: their missing renewals cannot be told from renewals an
// outage of the stream itself kept from being stored.
const (
	probeInterval = time.Second
	probeTimeout  = time.Second
	sweepInterval = 100 * time.Millisecond
	// maxEventAge is the oldest an event of the scope not yet applied
	// may be for a probe to pass: an older one is a renewal stuck in work
	// (a store that does not answer) or in a backlog (after an outage, or
	// name servers that cannot keep up).
	maxEventAge = time.Second
	// probeFresh: a passed probe older than this no longer counts.
	probeFresh = probeInterval + probeTimeout + 500*time.Millisecond
)

// expiry holds and sweeps the lifetimes of one scope at one replica.
type expiry struct {
	scope   string
	js      jetstream.JetStream
	nc      *nats.Conn
	durable string // the scope's shared events consumer
	bucket  string // its name space
	view    *view
	reg     *registrar
	log     *slog.Logger
	metrics *Metrics
	heldWhy string // why the last probe failed ("" when it passed)
}

func (x *expiry) run(ctx context.Context) {
	x.view.hold(time.Now()) // since newView: events stored meanwhile may hold renewals
	x.metrics.held(x.scope)
	x.heldWhy = "starting"
	probe := time.NewTicker(probeInterval)
	defer probe.Stop()
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	x.check(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-probe.C:
			x.check(ctx)
		case <-sweep.C:
			x.sweep(ctx)
		}
	}
}

// check probes the path of renewals and holds lifetimes when it is not
// whole.
func (x *expiry) check(ctx context.Context) {
	err := x.probe(ctx)
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	if err != nil {
		if x.heldWhy == "" {
			x.log.Warn("holding expiry: renewals cannot be stored now; every PE gets a fresh lifetime once they can", "reason", err)
			x.metrics.held(x.scope)
		}
		x.heldWhy = err.Error()
		x.view.interrupt(now)
		return
	}
	if x.heldWhy != "" {
		x.log.Info("expiry running: lifetimes count from now for PEs not renewed since", "held_since", x.view.heldTime())
	}
	x.heldWhy = ""
	x.view.passed.Store(now.UnixNano())
}

// probe asks for what a renewal needs; nil when all of it answers.
func (x *expiry) probe(ctx context.Context) error {
	if !x.nc.IsConnected() {
		return fmt.Errorf("not connected to NATS")
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	st, err := x.js.Stream(ctx, events.StreamName)
	if err != nil {
		return fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	if err := led(st.CachedInfo().Cluster); err != nil {
		return fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	c, err := st.Consumer(ctx, x.durable)
	if err != nil {
		return fmt.Errorf("consumer %s: %w", x.durable, err)
	}
	ci := c.CachedInfo()
	if err := led(ci.Cluster); err != nil {
		return fmt.Errorf("consumer %s: %w", x.durable, err)
	}
	if ci.NumPending > 0 || ci.NumAckPending > 0 {
		// The oldest event not yet applied (acknowledged), delivered or
		// not: a renewal stored that long ago has not reached the bucket.
		m, err := st.GetMsg(ctx, ci.AckFloor.Stream+1, jetstream.WithGetMsgSubject(events.Subject(x.scope, "*", "*")))
		if err == nil && time.Since(m.Time) > maxEventAge {
			return fmt.Errorf("consumer %s: an event stored %s ago is not yet applied (%d in work, %d not delivered)",
				x.durable, time.Since(m.Time).Round(time.Millisecond), ci.NumAckPending, ci.NumPending)
		}
	}
	kv, err := x.js.Stream(ctx, "KV_"+x.bucket)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", x.bucket, err)
	}
	if err := led(kv.CachedInfo().Cluster); err != nil {
		return fmt.Errorf("bucket %s: %w", x.bucket, err)
	}
	return nil
}

// led fails when a replicated stream or consumer has no leader (its
// members answer info requests during an election).
func led(c *jetstream.ClusterInfo) error {
	if c != nil && c.Leader == "" && len(c.Replicas) > 0 {
		return fmt.Errorf("no leader")
	}
	return nil
}

// sweep removes the PEs past their deadline, while lifetimes run.
func (x *expiry) sweep(ctx context.Context) {
	if !x.view.running() {
		return
	}
	held := x.view.heldTime()
	now := time.Now()
	for _, key := range x.view.overdue(now) {
		if ctx.Err() != nil {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, probeTimeout)
		_, err := x.reg.removeIf(rctx, key, events.ReasonExpired, func(rec *events.Record) bool {
			return !deadline(rec, held).After(now)
		}, "updated_at", lastUpdate(x.view, key), "held_since", held)
		cancel()
		if err != nil {
			x.log.Warn("expired PE not removed yet", "key", key, "err", err)
			return // the store is in trouble: the next probe will tell
		}
	}
}

// interrupt holds lifetimes from t until the next probe passes.
func (v *view) interrupt(t time.Time) {
	v.passed.Store(0)
	v.hold(t)
}

// running tells whether lifetimes run: the last probe passed, lately.
func (v *view) running() bool {
	p := v.passed.Load()
	return p != 0 && time.Since(time.Unix(0, p)) <= probeFresh
}

// deadline is when rec's lifetime runs out, counted from its last update
// or from the end of the last hold, whichever is later.
func deadline(rec *events.Record, held time.Time) time.Time {
	from := rec.UpdatedAt
	if held.After(from) {
		from = held
	}
	return from.Add(time.Duration(rec.LifetimeMS) * time.Millisecond)
}

func lastUpdate(v *view, key string) time.Time {
	rec, _ := v.last(key)
	return rec.UpdatedAt
}
