package policy

import (
	"slices"
	"testing"
)

// chiSquare of observed counts against the expected probabilities.
func chiSquare(counts []int, probs []float64) float64 {
	total := 0
	for _, c := range counts {
		total += c
	}
	chi := 0.0
	for i, c := range counts {
		exp := probs[i] * float64(total)
		d := float64(c) - exp
		chi += d * d / exp
	}
	return chi
}

func uniform(k int) []float64 {
	p := make([]float64, k)
	for i := range p {
		p[i] = 1 / float64(k)
	}
	return p
}

// normalize turns weights into probabilities.
func normalize(w ...float64) []float64 {
	sum := 0.0
	for _, x := range w {
		sum += x
	}
	p := make([]float64, len(w))
	for i, x := range w {
		p[i] = x / sum
	}
	return p
}

// Quantiles 0.999 of the chi-square distribution, by degrees of freedom:
// with the fixed seeds the tests are deterministic, and a right
// distribution stays below them but for one seed in a thousand.
var chi999 = map[int]float64{1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 11: 31.26}

// firstPicks counts which candidate comes first over draws picks of n.
func firstPicks(t *testing.T, p Picker, c []Candidate, n, draws int) []int {
	t.Helper()
	counts := make([]int, len(c))
	for range draws {
		got := p.Pick(nil, c, n, nil)
		if len(got) != min(n, len(c)) {
			t.Fatalf("want %d indexes, got %v", min(n, len(c)), got)
		}
		s := slices.Sorted(slices.Values(got))
		if len(slices.Compact(s)) != len(got) {
			t.Fatalf("repeated candidate: %v", got)
		}
		counts[got[0]]++
	}
	return counts
}

func TestRandomUniform(t *testing.T) {
	p := build(t, "random")
	c := cands(5)
	counts := firstPicks(t, p, c, 2, 50000)
	if chi := chiSquare(counts, uniform(5)); chi > chi999[4] {
		t.Fatalf("first picks not uniform: counts %v, chi-square %.1f", counts, chi)
	}
	// n near the pool size takes the shuffle.
	counts = firstPicks(t, p, c, 4, 50000)
	if chi := chiSquare(counts, uniform(5)); chi > chi999[4] {
		t.Fatalf("first picks (n=4) not uniform: counts %v, chi-square %.1f", counts, chi)
	}
}

func TestWeightedRandom(t *testing.T) {
	p := build(t, "weighted_random")
	c := cands(4)
	w := []float64{1, 2, 3, 4}
	for i := range c {
		c[i].Weight = int(w[i])
	}
	want := normalize(w...)
	counts := firstPicks(t, p, c, 1, 40000)
	if chi := chiSquare(counts, want); chi > chi999[3] {
		t.Fatalf("first picks %v do not follow the weights 1:2:3:4 (chi-square %.1f)", counts, chi)
	}
	if chi := chiSquare(counts, uniform(4)); chi < 100*chi999[3] {
		t.Fatalf("first picks %v look uniform (chi-square %.1f against uniform)", counts, chi)
	}

	// Without repetition: P(i, then j) = w_i/W · w_j/(W − w_i).
	var probs []float64
	cell := map[[2]int]int{}
	for i := range w {
		for j := range w {
			if i != j {
				cell[[2]int{i, j}] = len(probs)
				probs = append(probs, want[i]*w[j]/(10-w[i]))
			}
		}
	}
	pairs := make([]int, len(probs))
	for range 60000 {
		got := p.Pick(nil, c, 2, nil)
		pairs[cell[[2]int{got[0], got[1]}]]++
	}
	if chi := chiSquare(pairs, probs); chi > chi999[11] {
		t.Fatalf("ordered pairs %v do not follow sampling without repetition (chi-square %.1f)", pairs, chi)
	}

	// A very heavy PE already taken: the rest still follow their weights.
	c[3].Weight = 1_000_000
	counts = make([]int, 4)
	for range 30000 {
		got := p.Pick(nil, c, 2, nil)
		if got[0] == 3 {
			counts[got[1]]++
		}
	}
	if chi := chiSquare(counts[:3], normalize(1, 2, 3)); chi > chi999[2] {
		t.Fatalf("second picks %v after the heavy PE do not follow 1:2:3 (chi-square %.1f)", counts[:3], chi)
	}
}

func TestRandomizedLeastUsed(t *testing.T) {
	p := build(t, "randomized_least_used")
	c := cands(3)
	for i, l := range []float64{0, 0.5, 0.9} {
		c[i].Load = l
	}
	want := normalize(1, 0.5, 0.1)
	counts := firstPicks(t, p, c, 1, 40000)
	if chi := chiSquare(counts, want); chi > chi999[2] {
		t.Fatalf("first picks %v do not follow 1 − load (chi-square %.1f)", counts, chi)
	}
	if chi := chiSquare(counts, uniform(3)); chi < 100*chi999[2] {
		t.Fatalf("first picks %v look uniform", counts)
	}

	// A PE at 100 % load comes last, but is never left out.
	c = cands(4)
	c[1].Load = 1
	for range 5000 {
		got := p.Pick(nil, c, 4, nil)
		if got[3] != 1 {
			t.Fatalf("the PE at full load is not last: %v", got)
		}
	}
	// All at 100 %: uniform.
	for i := range c {
		c[i].Load = 1
	}
	counts = firstPicks(t, p, c, 2, 40000)
	if chi := chiSquare(counts, uniform(4)); chi > chi999[3] {
		t.Fatalf("all at full load, first picks %v not uniform (chi-square %.1f)", counts, chi)
	}
}

func TestRandomizedPriorityLeastUsed(t *testing.T) {
	p := build(t, "randomized_priority_least_used")
	c := []Candidate{
		{ID: "A"},
		{ID: "B", Load: 0.25, LoadIncrement: 0.25},
		{ID: "C", Load: 0.5, LoadIncrement: 0.75}, // saturates: the floor
	}
	counts := firstPicks(t, p, c, 1, 30000)
	if counts[2] != 0 {
		t.Fatalf("the saturated PE came first %d times", counts[2])
	}
	if chi := chiSquare(counts[:2], normalize(1, 0.5)); chi > chi999[1] {
		t.Fatalf("first picks %v do not follow 1 − (load + load_increment) (chi-square %.1f)", counts, chi)
	}
	if got := p.Pick(nil, c, 3, nil); got[2] != 2 {
		t.Fatalf("the saturated PE is not last: %v", got)
	}
}
