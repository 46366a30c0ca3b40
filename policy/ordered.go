package policy

import "sync"

// rank says how an ordered policy scores candidates: lower first.
type rank int

const (
	byPriority rank = iota
	byLeastUsed
	byMostUsed
	byPriorityLeastUsed
	byLeastUsedDegradation
	byPriorityLeastUsedDegradation
	byWeightedRoundRobin
)

// ordered is a deterministic policy: it ranks the candidates by a score,
// round robin among equals, and keeps per-PE state when the policy needs
// it (degradation counters, weighted-round-robin credits).
type ordered struct {
	mu    sync.Mutex
	by    rank
	cur   cursor
	tab   *table // nil for the stateless ranks
	score []float64
}

func newOrdered(by rank) *ordered {
	p := &ordered{by: by}
	if by >= byLeastUsedDegradation {
		p.tab = new(table)
	}
	return p
}

func (p *ordered) Pick(dst []int, cands []Candidate, n int, _ map[string]string) []int {
	return p.pick(dst, cands, n, nil)
}

func (p *ordered) PickTiered(dst []int, cands []Candidate, n int, _ map[string]string, tier []uint8) []int {
	return p.pick(dst, cands, n, tier)
}

// weight is a candidate's weight for weighted round robin (at least 1).
func weight(c *Candidate) int64 { return int64(max(c.Weight, 1)) }

func (p *ordered) pick(dst []int, cands []Candidate, n int, tier []uint8) []int {
	l := len(cands)
	n = min(n, l)
	if n <= 0 {
		return dst
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tab != nil {
		p.tab.sync(cands)
	}
	if cap(p.score) < l {
		p.score = make([]float64, l, l+l/4)
	}
	sc := p.score[:l]
	var wrrTotal int64
	switch p.by {
	case byPriority:
		for i := range cands {
			sc[i] = -float64(cands[i].Priority)
		}
	case byLeastUsed:
		for i := range cands {
			sc[i] = cands[i].Load
		}
	case byMostUsed:
		for i := range cands {
			sc[i] = -cands[i].Load
		}
	case byPriorityLeastUsed:
		for i := range cands {
			sc[i] = min(1, cands[i].Load+cands[i].LoadIncrement)
		}
	case byLeastUsedDegradation:
		for i := range cands {
			sc[i] = min(1, cands[i].Load+p.tab.at(i).deg)
		}
	case byPriorityLeastUsedDegradation:
		for i := range cands {
			sc[i] = min(1, cands[i].Load+cands[i].LoadIncrement+p.tab.at(i).deg)
		}
	case byWeightedRoundRobin:
		// Smooth weighted round robin: every candidate of the tier the
		// first PE comes from earns its weight, the one with the most
		// credit comes first and pays for the selection (the sum of the
		// weights earned, wrrTotal).
		first := minTier(tier)
		for i := range cands {
			e, w := p.tab.at(i), weight(&cands[i])
			if tier == nil || tier[i] == first {
				e.credit += w
				wrrTotal += w
				sc[i] = -float64(e.credit)
			} else {
				sc[i] = -float64(e.credit + w)
			}
		}
	}

	start := p.cur.start(cands)
	base := len(dst)
	if tier == nil {
		dst = best(dst, sc, start, n, nil, 0)
	} else {
		top := maxTier(tier)
		for t := 0; t <= int(top) && len(dst)-base < n; t++ {
			dst = best(dst, sc, start, n-(len(dst)-base), tier, uint8(t))
		}
	}
	first := dst[base]
	p.cur.last = cands[first].ID

	switch p.by {
	case byLeastUsedDegradation, byPriorityLeastUsedDegradation:
		for _, i := range dst[base:] {
			e := p.tab.at(i)
			e.deg = min(1, e.deg+cands[i].Degradation)
		}
	case byWeightedRoundRobin:
		p.tab.at(first).credit -= wrrTotal
	}
	return dst
}

// best appends to dst, best first, at most n candidates of tier t (every
// candidate when tier is nil) with the lowest scores; equal scores go in
// cyclic index order from start. It does not allocate when dst has room.
func best(dst []int, score []float64, start, n int, tier []uint8, t uint8) []int {
	l := len(score)
	base := len(dst)
	for k := range l {
		i := start + k
		if i >= l {
			i -= l
		}
		if tier != nil && tier[i] != t {
			continue
		}
		s := score[i]
		if len(dst)-base == n {
			// Scanning in cyclic order, an equal score ranks after.
			if s >= score[dst[len(dst)-1]] {
				continue
			}
			dst = dst[:len(dst)-1]
		}
		// Insert after every kept candidate with a score ≤ s.
		lo, hi := base, len(dst)
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if score[dst[m]] <= s {
				lo = m + 1
			} else {
				hi = m
			}
		}
		dst = append(dst, 0)
		copy(dst[lo+1:], dst[lo:])
		dst[lo] = i
	}
	return dst
}
