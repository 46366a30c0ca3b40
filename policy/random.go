package policy

import (
	"math/rand/v2"
	"slices"
)

// random draws a uniform sample without repetition.
type random struct{}

func (random) Pick(dst []int, cands []Candidate, n int, _ map[string]string) []int {
	l := len(cands)
	n = min(n, l)
	base := len(dst)
	for len(dst)-base < n {
		i := rand.IntN(l)
		// n is small next to l in practice (max ≤ 128), so rejection is
		// cheaper than shuffling an index slice of the whole pool.
		if !slices.Contains(dst[base:], i) {
			dst = append(dst, i)
		}
	}
	return dst
}
