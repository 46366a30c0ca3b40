package policy

import (
	"slices"
	"testing"
)

func cands(n int) []Candidate {
	c := make([]Candidate, n)
	for i := range c {
		c[i].ID = string(rune('A' + i))
	}
	return c
}

func TestRoundRobinOverlappingAnswers(t *testing.T) {
	b, ok := Get("round_robin")
	if !ok {
		t.Fatal("round_robin not registered")
	}
	p := b.Build()
	c := cands(4)
	want := [][]int{{0, 1, 2}, {1, 2, 3}, {2, 3, 0}, {3, 0, 1}, {0, 1, 2}}
	for i, w := range want {
		if got := p.Pick(nil, c, 3, nil); !slices.Equal(got, w) {
			t.Fatalf("selection %d: got %v, want %v", i, got, w)
		}
	}
	if got := p.Pick(nil, c[:2], 5, nil); len(got) != 2 {
		t.Fatalf("n larger than the pool: got %v", got)
	}
}

func TestRandomDistinctAndUniform(t *testing.T) {
	b, _ := Get("random")
	p := b.Build()
	c := cands(5)
	counts := make([]int, len(c))
	const draws = 50000
	for range draws {
		got := p.Pick(nil, c, 2, nil)
		if len(got) != 2 || got[0] == got[1] {
			t.Fatalf("want two distinct indexes, got %v", got)
		}
		counts[got[0]]++
	}
	// Chi-square with 4 degrees of freedom; 18.47 is the 0.999 quantile, so
	// a uniform picker fails this about once in a thousand runs and a
	// biased one nearly always.
	exp := float64(draws) / float64(len(c))
	chi := 0.0
	for _, o := range counts {
		d := float64(o) - exp
		chi += d * d / exp
	}
	if chi > 18.47 {
		t.Fatalf("first picks not uniform: counts %v, chi-square %.1f", counts, chi)
	}
}

func TestRegistry(t *testing.T) {
	if !slices.Contains(Names(), "random") {
		t.Fatalf("Names() = %v", Names())
	}
	if _, ok := Get("nope"); ok {
		t.Fatal("unknown policy found")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("registering a name twice did not panic")
		}
	}()
	Register(builderFunc{"random", nil})
}
