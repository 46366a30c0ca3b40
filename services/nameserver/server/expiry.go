package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
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
//     bucket must answer and have a leader, and its own NATS connection
//     must be up. Until a probe has passed, and whenever one fails, the
//     replica holds: heldSince is set to now. So does a probe that finds
//     the leader of RSP_EVENTS or of the bucket moved since the last one
//     (leadersStayed). A replica whose own store
//     write fails holds at once (registrar.handle).
//   - A PE's deadline is max(updated_at, heldSince) + lifetime. So after
//     any outage (an election, a lost node, a name-server restart, the
//     replica's own reconnect) every PE has a fresh lifetime, counted from
//     its end, to renew in.
//   - A passing probe also finds the oldest event of the scope not yet
//     applied (acknowledged), at this or another replica: every event
//     stored before it, or before the probe when none waits, has reached
//     the bucket. That instant is appliedUpTo, and a PE is overdue only
//     when its deadline is not after it: a renewal that waits in a backlog
//     (name servers that cannot keep up, or catch up after an outage) or
//     that is stuck at a replica whose store write hangs keeps its PE.
//   - Every sweepInterval, while the last probe passed, the replica removes
//     the overdue PEs: a purge with compare-and-set on the revision it
//     read (so of two replicas, one removes and announces), the remove
//     change with reason "expired", a log line. Resolution leaves out an
//     overdue PE even before it is swept.
//
// PEs that died while no name server ran are removed (and announced) one
// lifetime after the first replica is back, once it has read the events
// stored meanwhile (lookahead.go: reading them ahead is several times
// faster than applying them): their missing renewals cannot be told from
// renewals an outage of the stream itself kept from being stored.
const (
	probeInterval = 500 * time.Millisecond
	probeTimeout  = time.Second
	sweepInterval = 100 * time.Millisecond
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
	// leaders are the leaders of RSP_EVENTS and of the bucket that the
	// last probe saw ("" when not clustered): one that moved between two
	// probes is an election the probes did not catch.
	leaders [2]string
	// oldest is the stream sequence of the oldest event of the scope not
	// yet applied, as the last probe found (the stream's last sequence + 1
	// when none waited); it only grows.
	oldest atomic.Uint64
	// ahead reads a backlog ahead (lookahead.go); aheadReq feeds it.
	ahead    lookahead
	aheadReq chan aheadRequest
	// behindSince is when appliedUpTo fell more than backlogLag behind
	// (zero while it is not), lastLagLog when that was last logged.
	behindSince, lastLagLog time.Time
}

// backlogLag: events waiting longer than this to be applied make a
// backlog, logged while it lasts (every backlogLogEvery) and when it ends.
const (
	backlogLag      = 5 * time.Second
	backlogLogEvery = 5 * time.Second
)

func (x *expiry) run(ctx context.Context) {
	x.view.hold(time.Now()) // since newView: events stored meanwhile may hold renewals
	x.metrics.held(x.scope)
	x.heldWhy = "starting"
	probe := time.NewTicker(probeInterval)
	defer probe.Stop()
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	save := time.NewTicker(checkpointEvery)
	defer save.Stop()
	x.aheadReq = make(chan aheadRequest, 1)
	go x.lookaheadLoop(ctx)
	x.check(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-probe.C:
			x.check(ctx)
		case <-sweep.C:
			x.sweep(ctx)
		case <-save.C:
			x.saveCheckpoint(ctx)
		}
	}
}

// check probes the path of renewals and holds lifetimes when it is not
// whole.
func (x *expiry) check(ctx context.Context) {
	applied, ahead, err := x.probe(ctx)
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
	x.view.applied.Store(applied.UnixNano())
	x.view.passed.Store(now.UnixNano())
	x.logBacklog(now, applied)
	x.requestLookahead(ahead)
}

// logBacklog says when events wait long to be applied (after an outage
// of the name servers, or when they cannot keep up), and when they no
// longer do: expiry of PEs not renewed waits for it.
func (x *expiry) logBacklog(now, applied time.Time) {
	lag := now.Sub(applied)
	switch {
	case lag > backlogLag && now.Sub(x.lastLagLog) >= backlogLogEvery:
		if x.behindSince.IsZero() {
			x.behindSince = now
		}
		x.lastLagLog = now
		x.log.Info("applying a backlog of events", "behind", lag.Round(time.Millisecond), "oldest_waiting", applied)
	case lag <= time.Second && !x.behindSince.IsZero():
		x.log.Info("backlog of events applied", "took", now.Sub(x.behindSince).Round(time.Millisecond))
		x.behindSince, x.lastLagLog = time.Time{}, time.Time{}
	}
}

// probe asks for what a renewal needs; when all of it answers, it returns
// the instant every event stored before has been applied, and where a
// backlog, if any, starts and ends (for the lookahead).
func (x *expiry) probe(ctx context.Context) (time.Time, aheadRequest, error) {
	if !x.nc.IsConnected() {
		return time.Time{}, aheadRequest{}, fmt.Errorf("not connected to NATS")
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	asked := time.Now() // events stored before it are in the stream info
	st, err := x.js.Stream(ctx, events.StreamName)
	if err != nil {
		return time.Time{}, aheadRequest{}, fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	if err := led(st.CachedInfo().Cluster); err != nil {
		return time.Time{}, aheadRequest{}, fmt.Errorf("stream %s: %w", events.StreamName, err)
	}
	applied, err := x.appliedUpTo(ctx, st)
	if err != nil {
		return time.Time{}, aheadRequest{}, err
	}
	kv, err := x.js.Stream(ctx, "KV_"+x.bucket)
	if err != nil {
		return time.Time{}, aheadRequest{}, fmt.Errorf("bucket %s: %w", x.bucket, err)
	}
	if err := led(kv.CachedInfo().Cluster); err != nil {
		return time.Time{}, aheadRequest{}, fmt.Errorf("bucket %s: %w", x.bucket, err)
	}
	if err := x.leadersStayed(st.CachedInfo().Cluster, kv.CachedInfo().Cluster); err != nil {
		return time.Time{}, aheadRequest{}, err
	}
	return applied, aheadRequest{last: st.CachedInfo().State.LastSeq, asked: asked, applied: applied, held: x.view.heldTime()}, nil
}

// leadersStayed fails when the leader of RSP_EVENTS or of the bucket is
// not the one the last probe saw. An election can end between two probes
// (a killed leader's route closes at once, and its followers may elect a
// new one in well under probeInterval): no probe failed, yet renewals
// published meanwhile were refused. Holding at this probe gives every PE
// a fresh lifetime from now, as a failed probe would have.
func (x *expiry) leadersStayed(stream, bucket *jetstream.ClusterInfo) error {
	now := [2]string{leaderOf(stream), leaderOf(bucket)}
	was := x.leaders
	x.leaders = now
	for i, what := range []string{"stream " + events.StreamName, "bucket " + x.bucket} {
		if was[i] != "" && now[i] != was[i] {
			return fmt.Errorf("%s: leader moved from %s to %s", what, was[i], now[i])
		}
	}
	return nil
}

func leaderOf(c *jetstream.ClusterInfo) string {
	if c == nil {
		return ""
	}
	return c.Leader
}

// appliedUpTo is the instant every event of the scope stored before has
// been applied: when the oldest event not yet acknowledged (delivered or
// not) was stored, or now when none waits.
func (x *expiry) appliedUpTo(ctx context.Context, st jetstream.Stream) (time.Time, error) {
	asked := time.Now() // events stored later are not in what the consumer tells
	c, err := st.Consumer(ctx, x.durable)
	if err != nil {
		return time.Time{}, fmt.Errorf("consumer %s: %w", x.durable, err)
	}
	ci := c.CachedInfo()
	if err := led(ci.Cluster); err != nil {
		return time.Time{}, fmt.Errorf("consumer %s: %w", x.durable, err)
	}
	floor := ci.AckFloor.Stream // every event up to it has been applied
	if ci.NumPending == 0 && ci.NumAckPending == 0 {
		x.noteOldest(st.CachedInfo().State.LastSeq + 1)
		return asked, nil
	}
	m, err := st.GetMsg(ctx, floor+1, jetstream.WithGetMsgSubject(events.Subject(x.scope, "*", "*")))
	if err == nil {
		x.noteOldest(m.Sequence)
	}
	switch {
	case err == nil && m.Time.Before(asked):
		return m.Time, nil
	case err == nil, errors.Is(err, jetstream.ErrMsgNotFound): // not found: applied since
		return asked, nil
	}
	return time.Time{}, fmt.Errorf("oldest event not applied: %w", err)
}

// noteOldest records the oldest waiting event's sequence, if later.
func (x *expiry) noteOldest(seq uint64) {
	for {
		old := x.oldest.Load()
		if seq <= old || x.oldest.CompareAndSwap(old, seq) {
			return
		}
	}
}

// appliedBefore tells whether every event of the scope stored before
// stream sequence seq has been applied, as the last probe found.
func (x *expiry) appliedBefore(seq uint64) bool { return x.oldest.Load() >= seq }

// appliedNow asks for appliedUpTo now, bounded by probeTimeout.
func (x *expiry) appliedNow(ctx context.Context) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	st, err := x.js.Stream(ctx, events.StreamName)
	if err != nil {
		return time.Time{}, err
	}
	return x.appliedUpTo(ctx, st)
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
	held, applied := x.view.heldTime(), x.view.appliedTime()
	upTo := applied
	ahead, _ := x.ahead.horizon("")
	if ahead.After(upTo) {
		upTo = ahead // a backlog read ahead (lookahead.go)
	}
	for _, key := range x.view.overdue(upTo) {
		if ctx.Err() != nil {
			return
		}
		from := held
		if ahead, latest := x.ahead.horizon(key); !ahead.IsZero() && latest.After(from) {
			from = latest // an event of the PE waits in the backlog
		}
		cp := x.view.cp.Load()
		overdue := func(rec *events.Record) bool {
			return !deadline(rec, from).After(upTo) ||
				(cp != nil && !deadline(rec, time.Unix(0, cp.held)).After(time.Unix(0, cp.applied)))
		}
		if rec, ok := x.view.live(key); ok && !overdue(&rec) {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, probeTimeout)
		_, err := x.reg.removeIf(rctx, key, events.ReasonExpired, overdue,
			"updated_at", lastUpdate(x.view, key), "held_since", held, "applied_up_to", applied, "read_ahead_to", ahead, "checkpoint", cpString(cp))
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

// appliedTime is appliedUpTo: every event stored before it has been
// applied, as the last passed probe found.
func (v *view) appliedTime() time.Time { return time.Unix(0, v.applied.Load()) }

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

// cpString shows a checkpoint in a log line.
func cpString(cp *checkpoint) string {
	if cp == nil {
		return "none"
	}
	return time.Unix(0, cp.held).UTC().Format(time.RFC3339Nano) + ".." + time.Unix(0, cp.applied).UTC().Format(time.RFC3339Nano)
}
