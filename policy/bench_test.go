package policy

import (
	"fmt"
	"testing"
)

// pool500 is a pool of 500 PEs with varied parameters, in 5 zones.
func pool500() []Candidate {
	c := make([]Candidate, 500)
	for i := range c {
		c[i] = Candidate{
			ID:            fmt.Sprintf("pe-%04d", i),
			Rev:           uint64(i + 1),
			Weight:        1 + i%10,
			Priority:      i % 5,
			Load:          float64(i*37%100) / 100,
			Degradation:   0.01,
			LoadIncrement: 0.05,
			Meta:          map[string]string{"zone": fmt.Sprintf("z%d", i%5)},
		}
	}
	return c
}

func BenchmarkPick(b *testing.B) {
	c := pool500()
	for _, name := range allPolicies {
		b.Run(name, func(b *testing.B) {
			p := build(b, name)
			dst := make([]int, 0, 3)
			b.ReportAllocs()
			for b.Loop() {
				dst = p.Pick(dst[:0], c, 3, nil)
			}
		})
	}
}

func BenchmarkSelectZone(b *testing.B) {
	c := pool500()
	hint := map[string]string{"zone": "z1"}
	for _, name := range allPolicies {
		b.Run(name, func(b *testing.B) {
			p := build(b, name)
			dst := make([]int, 0, 3)
			b.ReportAllocs()
			for b.Loop() {
				dst = Select(p, dst[:0], c, 3, hint)
			}
		})
	}
}
