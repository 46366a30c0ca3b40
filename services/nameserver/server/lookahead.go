package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
)

// Lookahead. After an outage of the name servers, RSP_EVENTS holds a
// backlog (every live PE kept trying to renew: tens of thousands of events
// for 500 PEs and a minute), and appliedUpTo moves only as fast as the
// replicas apply and acknowledge it — on a replicated consumer, a few
// thousand events a second. A PE that died during the outage would wait
// for all of it before its lifetime could run out. So while the backlog
// lasts each replica also reads it ahead, without acknowledging anything
// (an ordered consumer: ephemeral, in memory, flow-controlled), and notes
// for each PE the store time of its latest waiting event. Every event a PE
// sent up to the point read is then known — applied (its record's
// updated_at) or waiting (noted) — and the PE is overdue once
// max(updated_at, held, latest waiting) + lifetime is not after that
// point. A waiting event counts as a renewal even if it will be refused:
// the lookahead can only keep a PE longer, never take it out sooner than
// the events would.
//
// Only the events stored since the last hold ended matter: a PE's
// deadline counts from max(updated_at, held, latest waiting), never from
// before held, so an event stored before held cannot move it. After an
// outage the hold ends at the restart, and the read starts there (less
// lookaheadSkew), not at the oldest waiting event a minute before: the
// PEs that died meanwhile are known one lifetime after the restart,
// however large the backlog and however slowly a loaded machine reads it.
const (
	// lookaheadSkew: the read starts this long before the hold ended, for
	// a name server's clock a little ahead of the stream's.
	lookaheadSkew = time.Second
	// lookaheadLag: a backlog older than this is read ahead.
	lookaheadLag = 2 * time.Second
	// lookaheadBatch and lookaheadWait bound one read.
	lookaheadBatch = 1000
	lookaheadWait  = 500 * time.Millisecond
)

// lookahead is what a replica read of a backlog of its scope's events.
type lookahead struct {
	mu sync.Mutex
	// upTo: every event stored from start to it was read here, and every
	// one stored before the oldest waiting event was applied; zero when no
	// backlog is being read.
	upTo time.Time
	// latest is, per key, the store time of its latest event read.
	latest map[string]time.Time

	cons  jetstream.Consumer // the ordered consumer reading; nil when none
	start time.Time          // the store time the reading started at
}

// horizon returns up to when the lookahead knows every event, and the
// latest waiting event of key; zero times when it knows nothing.
func (l *lookahead) horizon(key string) (upTo, latest time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.upTo, l.latest[key]
}

// stop forgets the backlog: it was applied.
func (l *lookahead) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.upTo, l.latest, l.cons, l.start = time.Time{}, nil, nil, time.Time{}
}

// aheadRequest is what a passing probe found: the backlog starts at
// stream sequence from (the oldest waiting event); the stream's last
// sequence was last when asked, and every event stored before applied
// was applied.
type aheadRequest struct {
	last                 uint64    // the stream's last sequence
	asked, applied, held time.Time // the probe's time, appliedUpTo, the end of the last hold
}

// lookaheadLoop reads ahead while the probes find a backlog, and forgets
// it once the probes find none.
func (x *expiry) lookaheadLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-x.aheadReq:
			if r.asked.Sub(r.applied) <= lookaheadLag {
				x.ahead.stop()
				continue
			}
			st, err := x.js.Stream(ctx, events.StreamName)
			if err != nil {
				continue
			}
			x.readAhead(ctx, st, r)
		}
	}
}

// requestLookahead hands the last probe's findings to lookaheadLoop,
// replacing any it has not taken yet.
func (x *expiry) requestLookahead(r aheadRequest) {
	for {
		select {
		case x.aheadReq <- r:
			return
		default:
			select {
			case <-x.aheadReq:
			default:
			}
		}
	}
}

// readAhead reads from the oldest waiting event, or from the end of the
// last hold when that is later, to the stream's last sequence as of the
// probe, in batches of at most lookaheadBatch, each waited for at most
// lookaheadWait, until the end or ctx ends.
func (x *expiry) readAhead(ctx context.Context, st jetstream.Stream, r aheadRequest) {
	start, last := r.applied, r.last
	if since := r.held.Add(-lookaheadSkew); since.After(start) {
		start = since
	}
	l := &x.ahead
	l.mu.Lock()
	cons := l.cons
	if cons == nil || start.Before(l.start) {
		l.latest, l.upTo = map[string]time.Time{}, time.Time{}
		l.start = start
		l.mu.Unlock()
		var err error
		cons, err = st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			FilterSubjects: events.ScopeEventSubjects(x.scope),
			DeliverPolicy:  jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
			InactiveThreshold: 10 * time.Second, // the server deletes it once unread
		})
		if err != nil {
			x.log.Debug("lookahead: no consumer", "err", err)
			return
		}
		l.mu.Lock()
		l.cons = cons
	}
	l.mu.Unlock()
	for ctx.Err() == nil {
		batch, err := cons.Fetch(lookaheadBatch, jetstream.FetchMaxWait(lookaheadWait))
		if err != nil {
			x.log.Debug("lookahead: fetch", "err", err)
			return
		}
		n, reachedEnd := 0, false
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			n++
			key, ok := eventKey(m.Subject(), m.Data())
			l.mu.Lock()
			if l.latest == nil { // stopped meanwhile
				l.mu.Unlock()
				return
			}
			if ok && meta.Timestamp.After(l.latest[key]) {
				l.latest[key] = meta.Timestamp
			}
			// Only what was read counts, never the probe's time: right
			// after a leader change a stream's info may not show every
			// event it has stored yet.
			if meta.Timestamp.After(l.upTo) {
				l.upTo = meta.Timestamp
			}
			reachedEnd = reachedEnd || meta.Sequence.Stream >= last
			l.mu.Unlock()
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			x.log.Debug("lookahead: fetch", "err", err)
		}
		if reachedEnd || n == 0 {
			return
		}
	}
}
