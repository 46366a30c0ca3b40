package policy

import (
	"math/rand/v2"
	"slices"
	"sync"
)

// randomPicker draws a sample without repetition: each next PE is drawn
// from those left in proportion to its weight (uniformly when weight is
// nil), as rsplib's value tree does. The random policies keep no state
// between selections.
type randomPicker struct {
	mu     sync.Mutex
	rnd    *rand.Rand // nil: the process-wide source
	weight func(*Candidate) float64
	w      []float64 // scratch, one per candidate: weight, 0 when not eligible
	cum    []float64 // scratch: prefix sums of w
	taken  []bool    // scratch: all false between picks
	idx    []int     // scratch: a partial shuffle
}

func newRandom(r *rand.Rand, weight func(*Candidate) float64) *randomPicker {
	return &randomPicker{rnd: r, weight: weight}
}

func (p *randomPicker) float64() float64 {
	if p.rnd == nil {
		return rand.Float64()
	}
	return p.rnd.Float64()
}

func (p *randomPicker) intN(n int) int {
	if p.rnd == nil {
		return rand.IntN(n)
	}
	return p.rnd.IntN(n)
}

func (p *randomPicker) Pick(dst []int, cands []Candidate, n int, _ map[string]string) []int {
	return p.pick(dst, cands, n, nil)
}

func (p *randomPicker) PickTiered(dst []int, cands []Candidate, n int, _ map[string]string, tier []uint8) []int {
	return p.pick(dst, cands, n, tier)
}

func (p *randomPicker) pick(dst []int, cands []Candidate, n int, tier []uint8) []int {
	l := len(cands)
	n = min(n, l)
	if n <= 0 {
		return dst
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.weight == nil && tier == nil {
		return p.uniform(dst, l, n)
	}
	if cap(p.w) < l {
		c := l + l/4
		p.w, p.cum, p.taken = make([]float64, l, c), make([]float64, l, c), make([]bool, l, c)
	}
	p.w, p.cum, p.taken = p.w[:l], p.cum[:l], p.taken[:l]
	base := len(dst)
	top := maxTier(tier)
	for t := 0; t <= int(top) && len(dst)-base < n; t++ {
		for i := range cands {
			switch {
			case tier != nil && int(tier[i]) != t:
				p.w[i] = 0
			case p.weight == nil:
				p.w[i] = 1
			default:
				p.w[i] = p.weight(&cands[i])
			}
		}
		dst = p.sample(dst, n-(len(dst)-base))
	}
	for _, i := range dst[base:] {
		p.taken[i] = false
	}
	return dst
}

// uniform draws n of l uniformly without repetition.
func (p *randomPicker) uniform(dst []int, l, n int) []int {
	base := len(dst)
	if 2*n <= l {
		// n is small next to l in practice (max ≤ 128), so rejection is
		// cheaper than shuffling an index slice of the whole pool.
		for len(dst)-base < n {
			if i := p.intN(l); !slices.Contains(dst[base:], i) {
				dst = append(dst, i)
			}
		}
		return dst
	}
	if cap(p.idx) < l {
		p.idx = make([]int, l, l+l/4)
	}
	idx := p.idx[:l]
	for i := range idx {
		idx[i] = i
	}
	for k := range n { // partial Fisher–Yates
		j := k + p.intN(l-k)
		idx[k], idx[j] = idx[j], idx[k]
	}
	return append(dst, idx[:n]...)
}

// sample appends at most n candidates drawn without repetition in
// proportion to p.w, skipping (and marking) p.taken ones.
func (p *randomPicker) sample(dst []int, n int) []int {
	w, cum, taken := p.w, p.cum, p.taken
	total := 0.0
	for i, x := range w {
		if taken[i] {
			x = 0
		}
		total += x
		cum[i] = total
	}
	for range n {
		if !(total > 0) {
			break
		}
		pick := -1
		// Draw from the whole tier and redraw when the PE is taken: the
		// accepted draw is proportional among those left. After a few
		// misses (a heavy PE already taken), draw exactly among them.
		for range 4 {
			r := p.float64() * total
			lo, hi := 0, len(cum)
			for lo < hi { // first i with cum[i] > r
				m := int(uint(lo+hi) >> 1)
				if cum[m] <= r {
					lo = m + 1
				} else {
					hi = m
				}
			}
			if lo < len(cum) && !taken[lo] {
				pick = lo
				break
			}
		}
		if pick < 0 {
			left := 0.0
			for i, x := range w {
				if !taken[i] {
					left += x
				}
			}
			if !(left > 0) {
				break
			}
			r := p.float64() * left
			for i, x := range w {
				if taken[i] || x == 0 {
					continue
				}
				pick = i
				if r -= x; r < 0 {
					break
				}
			}
		}
		taken[pick] = true
		dst = append(dst, pick)
	}
	return dst
}
