package rspclient

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/events"
)

// When watches read their pool afresh. Change notifications are plain
// NATS messages: the ones sent while a connection is down are lost, and a
// removal the name servers could not announce (all of them were down) is
// in the bucket only. So every watch and cache of a client reads its pool
// again (a resync) when
//   - the client's connection reconnects (nats.go's CONNECTED status);
//   - a name-server replica of the scope starts or comes back, as its
//     beats on rsp.<scope>.nameservers.<id> tell: an id first heard after
//     the watches started, another started_at, beats again after a
//     stopping beat or after beatSilence without one;
//   - every resync period (DefaultResync), whatever happened.
// A failed resync is tried again with backoff (resyncRetry) until it
// succeeds; it never gives up.

const (
	// beatSilence: beats again after this long without one count as a
	// name server coming back (as the pool page's "silent").
	beatSilence = 3 * time.Second
	// beatLearn: ids first heard this soon after the hub started, of
	// replicas started this long before (clock skew allowed for), are
	// the replicas already running, not new ones.
	beatLearn = 1500 * time.Millisecond
	// beatForget: an id not heard for this long is forgotten.
	beatForget = time.Hour
)

// Resync retries: the first comes resyncRetryMin after a failure, each next
// one twice as late up to resyncRetryMax, with ±20 % jitter. An attempt is
// bounded by resyncAttemptMin for the first resyncShortAttempts, then
// twice as long after each failure, up to the client's timeout: a store
// that answers again is read within a second or two, and a pool too large
// to read in a second still gets read.
const (
	resyncRetryMin   = 50 * time.Millisecond
	resyncRetryMax   = time.Second
	resyncAttemptMin = time.Second
	// resyncShortAttempts: attempts bounded by resyncAttemptMin.
	resyncShortAttempts = 5
)

// retryDelay is the wait before attempt n+1 after n failed attempts (n ≥ 1).
func retryDelay(n int) time.Duration {
	d := resyncRetryMin << min(n-1, 10)
	d = min(d, resyncRetryMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// attemptTimeout bounds attempt n+1 after n failed attempts.
func attemptTimeout(n int, limit time.Duration) time.Duration {
	if n < resyncShortAttempts {
		return resyncAttemptMin
	}
	return min(resyncAttemptMin<<min(n-resyncShortAttempts+1, 10), max(limit, resyncAttemptMin))
}

// resyncHub tells the watches of one client when to resync. It runs while
// a watch of the client does.
type resyncHub struct {
	c      *Client
	status chan nats.Status
	sub    *nats.Subscription // nil when the beats cannot be heard

	mu    sync.Mutex
	kicks map[chan struct{}]struct{}
	beats beatTracker
}

var (
	hubsMu sync.Mutex
	hubs   = map[*Client]*resyncHub{}
)

// resyncs returns a channel that receives (coalesced) when the watch
// should resync, and a func to stop receiving.
func (c *Client) resyncs() (<-chan struct{}, func()) {
	kick := make(chan struct{}, 1)
	hubsMu.Lock()
	h := hubs[c]
	if h == nil {
		h = c.startHub()
		hubs[c] = h
	}
	h.mu.Lock()
	h.kicks[kick] = struct{}{}
	h.mu.Unlock()
	hubsMu.Unlock()
	var once sync.Once
	return kick, func() {
		once.Do(func() {
			hubsMu.Lock()
			defer hubsMu.Unlock()
			h.mu.Lock()
			delete(h.kicks, kick)
			last := len(h.kicks) == 0
			h.mu.Unlock()
			if last && hubs[c] == h {
				delete(hubs, c)
				h.stop()
			}
		})
	}
}

func (c *Client) startHub() *resyncHub {
	h := &resyncHub{c: c, kicks: map[chan struct{}]struct{}{}, beats: beatTracker{since: time.Now(), seen: map[string]beatSeen{}}}
	h.status = c.nc.StatusChanged(nats.CONNECTED)
	go func() {
		for range h.status { // closed by RemoveStatusListener
			h.kick("connection reconnected")
		}
	}()
	sub, err := c.nc.Subscribe(events.NameServersSubject(c.scope), func(m *nats.Msg) {
		var b events.NameServerBeat
		if events.Decode(m.Data, &b) != nil {
			return
		}
		h.mu.Lock()
		why := h.beats.heard(b, time.Now())
		h.mu.Unlock()
		if why != "" {
			h.kick(why)
		}
	})
	if err != nil {
		// Resyncs still follow reconnects and the resync period.
		c.log.Warn("name-server beats not followed: watches resync after reconnects and periodically only", "err", err)
	}
	h.sub = sub
	return h
}

func (h *resyncHub) stop() {
	h.c.nc.RemoveStatusListener(h.status)
	if h.sub != nil {
		_ = h.sub.Unsubscribe()
	}
}

// kick tells every watch to resync.
func (h *resyncHub) kick(why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.c.log.Info("watches resync", "why", why, "watches", len(h.kicks))
	for k := range h.kicks {
		select {
		case k <- struct{}{}:
		default:
		}
	}
}

// beatTracker follows the name-server beats of a scope.
type beatTracker struct {
	since time.Time // when listening began
	seen  map[string]beatSeen
}

type beatSeen struct {
	last     time.Time // arrival of the last beat
	started  time.Time
	stopping bool
}

// heard takes a beat arriving at now and says why it calls for a resync
// ("" when it does not).
func (t *beatTracker) heard(b events.NameServerBeat, now time.Time) string {
	old, ok := t.seen[b.ID]
	t.seen[b.ID] = beatSeen{last: now, started: b.StartedAt, stopping: b.Stopping}
	switch {
	case b.Stopping:
		return ""
	case !ok:
		for id, s := range t.seen {
			if now.Sub(s.last) > beatForget {
				delete(t.seen, id)
			}
		}
		// Replicas already running when listening began are learnt, not
		// news (the watch read the pool after they started).
		if now.Sub(t.since) < beatLearn && b.StartedAt.Before(t.since.Add(-beatLearn)) {
			return ""
		}
		return "name server " + b.ID + " started"
	case !old.started.Equal(b.StartedAt):
		return "name server " + b.ID + " restarted"
	case old.stopping:
		return "name server " + b.ID + " is back after stopping"
	case now.Sub(old.last) > beatSilence:
		return "name server " + b.ID + " is back after " + now.Sub(old.last).Round(100*time.Millisecond).String() + " of silence"
	}
	return ""
}
