package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

// observer records every removal of the scope: the remove changes on the
// change subject, seen from one connection pinned to each node (a dead
// node does not blind it), and the purge/delete markers of the bucket's
// stream (reason in their Rsp-Reason header; markers without it fall
// back to nats-server's marker reason), read by an ordered consumer (which starts over by itself after
// a leader change). Both name the removal's revision (its stream
// sequence in the bucket), which joins them.
type observer struct {
	mu       sync.Mutex
	removals map[uint64]*Removal // by revision
	cancel   context.CancelFunc
	done     chan struct{}
}

func (w *world) observe(ctx context.Context) (*observer, error) {
	o := &observer{removals: map[uint64]*Removal{}, done: make(chan struct{})}
	for i := range nodes {
		nc, err := w.connect(ctx, "chaos-observer", w.cluster.URL(i), auth.RoleAdmin)
		if err != nil {
			return nil, err
		}
		if _, err := nc.Subscribe(events.Subject(scope, events.KindChanges, ">"), o.change); err != nil {
			return nil, err
		}
		if err := nc.Flush(); err != nil {
			return nil, err
		}
	}
	nc, err := w.connect(ctx, "chaos-observer", w.cluster.URLs(-1), auth.RoleAdmin)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	var cons jetstream.Consumer
	if err := retry(ctx, 30*time.Second, func() error {
		var err error
		cons, err = js.OrderedConsumer(ctx, bucketStream(), jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverNewPolicy, HeadersOnly: true,
		})
		return err
	}); err != nil {
		return nil, fmt.Errorf("ordered consumer on %s: %w", bucketStream(), err)
	}
	cc, err := cons.Consume(o.marker)
	if err != nil {
		return nil, err
	}
	o.cancel = cc.Stop
	return o, nil
}

func (o *observer) close() {
	if o.cancel != nil {
		o.cancel()
	}
}

// get is the removal of revision rev, made on first sight.
func (o *observer) get(rev uint64, pool, peID string) *Removal {
	r := o.removals[rev]
	if r == nil {
		r = &Removal{Pool: pool, PEID: peID, At: time.Now()}
		o.removals[rev] = r
	}
	return r
}

func (o *observer) change(m *nats.Msg) {
	var ch events.Change
	if json.Unmarshal(m.Data, &ch) != nil || ch.Op != events.OpRemove {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.get(ch.Revision, ch.Pool, ch.PEID)
	r.Published = true
	r.Reason = ch.Reason
}

func (o *observer) marker(m jetstream.Msg) {
	h := m.Headers()
	op := h.Get("KV-Operation")
	mr := h.Get(jetstream.MarkerReasonHeader)
	if op == "" && mr == "" {
		return // a put
	}
	meta, err := m.Metadata()
	if err != nil {
		return
	}
	key := strings.TrimPrefix(m.Subject(), "$KV."+events.Bucket(scope)+".")
	pool, peID, ok := strings.Cut(key, ".")
	if !ok {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	r := o.get(meta.Sequence.Stream, pool, peID)
	r.InBucket = true
	if r.Reason == "" {
		switch {
		case h.Get(events.HeaderReason) != "":
			r.Reason = h.Get(events.HeaderReason)
		case mr == "MaxAge":
			r.Reason = events.ReasonExpired
		default:
			r.Reason = "unknown (" + op + mr + ")"
		}
	}
}

// since lists the removals seen first at or after t, oldest first.
func (o *observer) since(t time.Time) []Removal {
	o.mu.Lock()
	defer o.mu.Unlock()
	var rs []Removal
	for _, r := range o.removals {
		if !r.At.Before(t) {
			rs = append(rs, *r)
		}
	}
	slices.SortFunc(rs, func(a, b Removal) int { return a.At.Compare(b.At) })
	return rs
}

// resolutions counts the pool users' answers of the current fault's
// window and, per pool, when the last full answer came.
type resolutions struct {
	mu       sync.Mutex
	lastFull map[string]time.Time
	// window
	gapFrom                     time.Time // gaps are measured from here (a window's start, an outage's end)
	outage                      bool
	count, failed, failedOutage int
	longest                     time.Duration
	slowest                     time.Duration // the longest single resolution (client retries included)
	whys                        []string      // why the first failed ones failed (maxWhys)
}

// maxWhys is how many failed resolutions a window explains.
const maxWhys = 5

func newResolutions(pools []string) *resolutions {
	r := &resolutions{lastFull: map[string]time.Time{}}
	for _, p := range pools {
		r.lastFull[p] = time.Time{}
	}
	return r
}

// begin starts a window at t.
func (r *resolutions) begin(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gapFrom, r.count, r.failed, r.failedOutage, r.longest, r.slowest, r.whys = t, 0, 0, 0, 0, 0, nil
}

// setOutage says whether the name servers are stopped on purpose; at its
// end, gaps are measured from then on.
func (r *resolutions) setOutage(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.outage = on
	if !on {
		r.gapFrom = time.Now()
	}
}

func (r *resolutions) inOutage() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.outage
}

// gap is how long pool has gone without a full answer at t.
func (r *resolutions) gap(pool string, t time.Time) time.Duration {
	from := r.lastFull[pool]
	if from.Before(r.gapFrom) {
		from = r.gapFrom
	}
	return max(t.Sub(from), 0)
}

// record counts one resolution of pool asked at asked, answered (or
// failed) at at; outage: it was asked while the name servers were
// stopped on purpose; why says what was wrong with it ("" for a full
// answer).
func (r *resolutions) record(pool string, asked, at time.Time, why string, outage bool) {
	full := why == ""
	r.mu.Lock()
	defer r.mu.Unlock()
	if asked.Before(r.gapFrom) && !outage {
		return // asked before the window
	}
	r.count++
	if !outage && !r.outage {
		r.slowest = max(r.slowest, at.Sub(asked))
	}
	switch {
	case full:
		if !r.outage {
			r.longest = max(r.longest, r.gap(pool, at))
		}
		r.lastFull[pool] = at
	case outage || r.outage:
		r.failedOutage++
	default:
		r.failed++
		if len(r.whys) < maxWhys {
			r.whys = append(r.whys, fmt.Sprintf("%s asked %.1f s into the window, answered after %s: %s",
				pool, asked.Sub(r.gapFrom).Seconds(), at.Sub(asked).Round(time.Millisecond), why))
		}
	}
}

// window closes the window at end: its counts, its longest gap (also
// the gaps still open at end) and its slowest resolution.
func (r *resolutions) window(end time.Time) (count, failed, failedOutage int, longest, slowest time.Duration, whys []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	longest = r.longest
	for p := range r.lastFull {
		longest = max(longest, r.gap(p, end))
	}
	return r.count, r.failed, r.failedOutage, longest, r.slowest, slices.Clone(r.whys)
}

// notFullSince names a pool with no full answer since t ("" if none).
func (r *resolutions) notFullSince(t time.Time) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for p, last := range r.lastFull {
		if last.Before(t) {
			return p
		}
	}
	return ""
}
