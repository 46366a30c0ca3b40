package server

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Expiry checkpoints. A replica that starts holds lifetimes (expiry.go):
// it cannot know whether renewals could be stored while it was down, so
// every PE gets a fresh lifetime. That would also serve again, for one
// lifetime, a PE whose lifetime had run out before a crash but whose
// removal the crash lost (or that the sweeper had not reached). So each
// replica that runs writes, every checkpointEvery, the pair of its
// expiry rule — held_since and appliedUpTo — to the key checkpointKey of
// the scope's reports bucket, and every replica reads it when it starts
// and adopts the newest it sees. A checkpoint is a past evaluation of the
// rule: a PE with max(updated_at, held_since) + lifetime ≤ applied_up_to
// had not renewed for a whole lifetime while renewals could be stored, so
// it is overdue whatever happened since (a renewal since moves
// updated_at). Resolution leaves such PEs out from the moment the view is
// loaded, and the sweeper removes them once its probes pass.
const (
	checkpointKey   = "expiry" // no dot: never a <pool>.<pe_id> key
	checkpointEvery = time.Second
)

// checkpoint is the pair of the expiry rule (Unix nanoseconds).
type checkpoint struct{ held, applied int64 }

// checkpointJSON is a checkpoint as the bucket holds it.
type checkpointJSON struct {
	HeldSince   time.Time `json:"held_since"`
	AppliedUpTo time.Time `json:"applied_up_to"`
	By          string    `json:"by"`
}

// adopt makes cp the view's checkpoint if it is newer than the one it has.
func (v *view) adopt(cp checkpoint) {
	for {
		old := v.cp.Load()
		if old != nil && old.applied >= cp.applied {
			return
		}
		if v.cp.CompareAndSwap(old, &cp) {
			return
		}
	}
}

// readCheckpoint reads the scope's checkpoint; false when there is none
// (or it cannot be read: then the hold alone applies).
func readCheckpoint(ctx context.Context, kv jetstream.KeyValue) (checkpoint, uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	e, err := kv.Get(ctx, checkpointKey)
	if err != nil {
		return checkpoint{}, 0, false
	}
	var j checkpointJSON
	if json.Unmarshal(e.Value(), &j) != nil {
		return checkpoint{}, e.Revision(), false
	}
	return checkpoint{held: j.HeldSince.UnixNano(), applied: j.AppliedUpTo.UnixNano()}, e.Revision(), true
}

// saveCheckpoint writes this replica's pair when it is newer than the
// stored one, and adopts the stored one otherwise.
func (x *expiry) saveCheckpoint(ctx context.Context) {
	if !x.view.running() {
		return
	}
	mine := checkpoint{held: x.view.held.Load(), applied: x.view.applied.Load()}
	kv := x.reg.reports
	stored, rev, ok := readCheckpoint(ctx, kv)
	if ok && stored.applied >= mine.applied {
		x.view.adopt(stored)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	val, _ := json.Marshal(checkpointJSON{HeldSince: time.Unix(0, mine.held).UTC(), AppliedUpTo: time.Unix(0, mine.applied).UTC(), By: x.reg.home})
	var err error
	if rev == 0 {
		_, err = kv.Create(ctx, checkpointKey, val)
	} else {
		_, err = kv.Update(ctx, checkpointKey, val, rev)
	}
	switch {
	case err == nil:
		x.view.adopt(mine)
	case isCASConflict(err), errors.Is(err, jetstream.ErrKeyExists):
		// Another replica wrote one meanwhile: the next round compares.
	default:
		x.log.Debug("expiry checkpoint not written", "err", err)
	}
}
