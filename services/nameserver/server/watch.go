package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Key-value watches (the view's, the account JWT's) run for the replica's
// life. nats.go's watcher (an ordered consumer) recovers from gaps and, at
// its next idle heartbeat check (10 s), from a consumer that went away;
// but it ends for good when it cannot make a new consumer, and until that
// check it stalls. So each watch is supervised: it is started again, with
// backoff, when it ends, and when a probe of the store every
// watchProbeInterval finds it behind twice in a row without progress in
// between. A restarted watch delivers the current value of every key
// again, which re-syncs the view (keys it holds that are gone from the
// store are dropped).
const watchProbeInterval = time.Second

// watchSpec is what keepWatching needs of one watch.
type watchSpec struct {
	what string
	log  *slog.Logger
	// start starts the watch.
	start func(context.Context) (jetstream.KeyWatcher, error)
	// latest is the newest revision the watch must deliver (0: nothing
	// to compare); it probes the store.
	latest func(context.Context) (uint64, error)
	// resync is called before the initial values of a restarted watch.
	resync func()
	// apply gets every entry.
	apply func(jetstream.KeyValueEntry)
	// synced is called at the end of each start's initial values: the
	// state now reflects every revision up to upTo.
	synced func(upTo uint64)
}

// keepWatching runs the watch until ctx ends. ready is closed after the
// first start's initial values. The first start is retried while it fails
// for a transient reason (a bucket just created on a cluster may have no
// leader yet; the caller's setup time bounds the wait); another error of
// the first start is returned. Later starts are always retried.
func keepWatching(ctx context.Context, spec watchSpec, ready chan<- struct{}) error {
	restarts := 0
	b := newBackoff(100*time.Millisecond, 5*time.Second)
	for {
		began := time.Now()
		started, err := watchOnce(ctx, spec, restarts > 0, &ready)
		if ctx.Err() != nil {
			return nil
		}
		if !started && restarts == 0 && !isTransientJS(err) {
			return err // the very first start failed: Start reports it
		}
		restarts++
		if time.Since(began) > time.Minute {
			b.Reset() // it ran well for a while: a new trouble
		}
		wait := b.NextBackOff()
		spec.log.Warn("key-value watch restarts", "watch", spec.what, "why", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// errStalled ends a watch that the probe found behind.
var errStalled = errors.New("the watch fell behind the store")

// watchOnce runs one watch until it ends, stalls or ctx ends; started
// says whether the watch could be started at all.
func watchOnce(ctx context.Context, spec watchSpec, restart bool, ready *chan<- struct{}) (started bool, _ error) {
	// Everything stored before the watch starts is in its initial values.
	lctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	upTo, err := spec.latest(lctx)
	cancel()
	if err != nil {
		upTo = 0
	}
	w, err := spec.start(ctx)
	if err != nil {
		return false, err
	}
	// Stopping a watcher deletes its consumer with a request, which waits
	// out the request timeout while the connection is down: not here.
	defer func() { go func() { _ = w.Stop() }() }()
	if restart && spec.resync != nil {
		spec.resync()
	}
	var seen uint64 // the newest revision delivered
	probe := time.NewTicker(watchProbeInterval)
	defer probe.Stop()
	initial := true
	// behind: the last probe found the watch behind the store, when it
	// had delivered behindSeen. quiet: probes in a row that saw no entry
	// during the initial values.
	behind, behindSeen, quiet := false, uint64(0), 0
	entries := 0
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case e, ok := <-w.Updates():
			if !ok {
				return true, errors.New("the key-value watch ended")
			}
			if e == nil {
				if initial {
					initial = false
					seen = max(seen, upTo)
					spec.synced(seen)
					if *ready != nil {
						close(*ready)
						*ready = nil
					}
				}
				continue
			}
			seen = max(seen, e.Revision())
			entries++
			spec.apply(e)
		case <-probe.C:
			if initial {
				// Initial values that keep coming are progress enough.
				if entries == 0 {
					quiet++
				} else {
					quiet = 0
				}
				entries = 0
				if quiet >= 3 {
					spec.log.Warn("key-value watch stalled in its initial values", "watch", spec.what)
					return true, errStalled
				}
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, watchProbeInterval)
			latest, err := spec.latest(pctx)
			cancel()
			switch {
			case err != nil || latest <= seen:
				behind = false
			case behind && behindSeen == seen:
				spec.log.Warn("key-value watch stalled", "watch", spec.what, "delivered", seen, "store", latest)
				return true, errStalled
			default:
				behind, behindSeen = true, seen
			}
		}
	}
}
