package policy

import "sync/atomic"

// roundRobin starts each selection one member further than the last.
type roundRobin struct{ next atomic.Uint64 }

func (r *roundRobin) Pick(dst []int, cands []Candidate, n int, _ map[string]string) []int {
	l := len(cands)
	n = min(n, l)
	start := int((r.next.Add(1) - 1) % uint64(l))
	for i := range n {
		dst = append(dst, (start+i)%l)
	}
	return dst
}
