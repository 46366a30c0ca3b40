package policy

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
)

// Hint is a plug-in that turns one key of a resolution's hints into a
// preference among a pool's PEs.
type Hint interface {
	// Key is the hint key it handles ("zone").
	Key() string
	// Prefers reports whether c suits the hint's value. It must be safe
	// for concurrent use and should be cheap: Select calls it once per
	// candidate.
	Prefers(c *Candidate, value string) bool
}

// HintZone is the key of the built-in zone hint: it prefers the candidates
// whose Meta["zone"] equals the hint's value.
const HintZone = "zone"

type zoneHint struct{}

func (zoneHint) Key() string                             { return HintZone }
func (zoneHint) Prefers(c *Candidate, value string) bool { return c.Meta[HintZone] == value }

// hints is the registry, copied on write so that Select reads it without a
// lock.
var (
	hintsMu sync.Mutex
	hints   atomic.Pointer[map[string]Hint]
)

// RegisterHint adds a hint plug-in; registering a key twice panics, as it
// is a programming error.
func RegisterHint(h Hint) {
	hintsMu.Lock()
	defer hintsMu.Unlock()
	next := map[string]Hint{}
	if cur := hints.Load(); cur != nil {
		next = maps.Clone(*cur)
	}
	if _, dup := next[h.Key()]; dup {
		panic(fmt.Sprintf("policy: hint %q registered twice", h.Key()))
	}
	next[h.Key()] = h
	hints.Store(&next)
}

// HintKeys lists the registered hint keys, sorted.
func HintKeys() []string {
	cur := hints.Load()
	if cur == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(*cur))
}

func init() { RegisterHint(zoneHint{}) }

// maxHints bounds the hints Select applies to one resolution.
const maxHints = 8

var tierBufs = sync.Pool{New: func() any { return new([]uint8) }}

// Select is Pick with the registered hints applied: the candidates that
// the hint keys with a registered Hint prefer come first, ranked by the
// pool policy among them, and the pool policy fills the remaining slots
// from the rest. With several applicable hints, a candidate's tier is the
// number it does not satisfy, best tier first. Without an applicable hint,
// or when every candidate is in the same tier, Select is exactly p.Pick.
//
// A TieredPicker (every built-in policy) ranks the tiers in one selection;
// any other Picker is asked once per tier that has slots left to fill, on
// that tier's candidates, so its state may advance by more than one
// selection.
func Select(p Picker, dst []int, cands []Candidate, n int, hint map[string]string) []int {
	if len(hint) == 0 || len(cands) == 0 || n <= 0 {
		return p.Pick(dst, cands, n, hint)
	}
	reg := hints.Load()
	var apply [maxHints]struct {
		h Hint
		v string
	}
	k := 0
	for key, v := range hint {
		if h, ok := (*reg)[key]; ok && k < maxHints {
			apply[k].h, apply[k].v = h, v
			k++
		}
	}
	if k == 0 {
		return p.Pick(dst, cands, n, hint)
	}
	buf := tierBufs.Get().(*[]uint8)
	defer tierBufs.Put(buf)
	if cap(*buf) < len(cands) {
		*buf = make([]uint8, len(cands), len(cands)+len(cands)/4)
	}
	tier := (*buf)[:len(cands)]
	lo, hi := uint8(maxHints), uint8(0)
	for i := range cands {
		var t uint8
		for _, a := range apply[:k] {
			if !a.h.Prefers(&cands[i], a.v) {
				t++
			}
		}
		tier[i] = t
		lo, hi = min(lo, t), max(hi, t)
	}
	if lo == hi {
		return p.Pick(dst, cands, n, hint)
	}
	if tp, ok := p.(TieredPicker); ok {
		return tp.PickTiered(dst, cands, n, hint, tier)
	}
	return pickByTier(p, dst, cands, n, hint, tier, hi)
}

// pickByTier serves a Picker that is not a TieredPicker: one Pick per
// tier, over a copy of that tier's candidates.
func pickByTier(p Picker, dst []int, cands []Candidate, n int, hint map[string]string, tier []uint8, hi uint8) []int {
	base := len(dst)
	var sub []Candidate
	var at, got []int
	for t := 0; t <= int(hi) && len(dst)-base < n; t++ {
		sub, at = sub[:0], at[:0]
		for i := range cands {
			if int(tier[i]) == t {
				sub = append(sub, cands[i])
				at = append(at, i)
			}
		}
		if len(sub) == 0 {
			continue
		}
		got = p.Pick(got[:0], sub, n-(len(dst)-base), hint)
		for _, j := range got {
			if j >= 0 && j < len(at) {
				dst = append(dst, at[j])
			}
		}
	}
	return dst
}
