package policy

import "sync"

// cursor is the rotation of round robin (and of round robin among equals):
// it remembers, by PE id, the PE that came first in the last answer, so the
// rotation carries on past members joining and leaving.
type cursor struct{ last string }

// start returns the index of the first candidate after the last answer's
// first PE in PE-id order (cands is sorted by id), wrapping; 0 at first.
func (c *cursor) start(cands []Candidate) int {
	if c.last == "" {
		return 0
	}
	lo, hi := 0, len(cands)
	for lo < hi { // first candidate with ID > last
		m := int(uint(lo+hi) >> 1)
		if cands[m].ID <= c.last {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == len(cands) {
		return 0
	}
	return lo
}

// maxTier returns the highest tier in tier (0 when nil).
func maxTier(tier []uint8) uint8 {
	var t uint8
	for _, x := range tier {
		t = max(t, x)
	}
	return t
}

// minTier returns the lowest tier in tier (0 when nil).
func minTier(tier []uint8) uint8 {
	if len(tier) == 0 {
		return 0
	}
	t := tier[0]
	for _, x := range tier[1:] {
		t = min(t, x)
	}
	return t
}

// roundRobin starts each selection one member further than the last.
type roundRobin struct {
	mu  sync.Mutex
	cur cursor
}

func (r *roundRobin) Pick(dst []int, cands []Candidate, n int, _ map[string]string) []int {
	return r.pick(dst, cands, n, nil)
}

func (r *roundRobin) PickTiered(dst []int, cands []Candidate, n int, _ map[string]string, tier []uint8) []int {
	return r.pick(dst, cands, n, tier)
}

func (r *roundRobin) pick(dst []int, cands []Candidate, n int, tier []uint8) []int {
	l := len(cands)
	n = min(n, l)
	if n <= 0 {
		return dst
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	start := r.cur.start(cands)
	base := len(dst)
	if tier == nil {
		for k := range n {
			i := start + k
			if i >= l {
				i -= l
			}
			dst = append(dst, i)
		}
	} else {
		top := maxTier(tier)
		for t := 0; t <= int(top) && len(dst)-base < n; t++ {
			for k := 0; k < l && len(dst)-base < n; k++ {
				i := start + k
				if i >= l {
					i -= l
				}
				if int(tier[i]) == t {
					dst = append(dst, i)
				}
			}
		}
	}
	r.cur.last = cands[dst[base]].ID
	return dst
}
