package policy

import (
	"testing"

	"github.com/rserpool/rsp/events"
)

func TestRoundRobin(t *testing.T) {
	p := build(t, "round_robin")
	c := cands(4)
	wantSeq(t, p, c, 3, "ABC", "BCD", "CDA", "DAB", "ABC")
	if got := p.Pick(nil, c[:2], 5, nil); len(got) != 2 {
		t.Fatalf("n larger than the pool: got %v", got)
	}
	// Members leave and join: the rotation carries on after the last first
	// PE (B, from the two-member pick) by id.
	c5 := cands(5)
	acd := []Candidate{c5[0], c5[2], c5[3]}
	wantSeq(t, p, acd, 3, "CDA", "DAC")
	wantSeq(t, p, c5, 3, "EAB", "ABC")
	// The last first PE (A) left: the next id starts.
	wantSeq(t, p, c5[1:], 2, "BC")
}

func TestWeightedRoundRobin(t *testing.T) {
	p := build(t, "weighted_round_robin")
	c := cands(3)
	c[0].Weight, c[1].Weight, c[2].Weight = 3, 1, 1
	// Smooth: A's three turns are spread over the round, twice in a row.
	wantSeq(t, p, c, 1, "A", "B", "A", "C", "A", "A", "B", "A", "C", "A")
	// The rest of an answer comes in order of credit.
	wantSeq(t, p, c, 3, "ABC", "BCA", "ACB")

	// Each PE weight times per round, every round.
	w := []int{5, 2, 3, 1, 4}
	c = cands(len(w))
	for i := range c {
		c[i].Weight = w[i]
	}
	p = build(t, "weighted_round_robin")
	for round := range 10 {
		count := make([]int, len(c))
		for range 15 {
			count[p.Pick(nil, c, 3, nil)[0]]++
		}
		for i := range w {
			if count[i] != w[i] {
				t.Fatalf("round %d: counts %v, want %v", round, count, w)
			}
		}
	}

	// A member joins (weight 2) and one leaves: over many rounds the
	// shares follow the weights of the members left.
	c = append(c[1:], Candidate{ID: "F", Weight: 2})
	count := make([]int, len(c))
	for range 100 * 12 {
		count[p.Pick(nil, c, 2, nil)[0]]++
	}
	for i := range c {
		if d := count[i] - 100*c[i].Weight; d < -2 || d > 2 {
			t.Fatalf("after join and leave: counts %v, want 100× the weights of %v", count, c)
		}
	}
}

// TestWeightedRoundRobinAtMaxWeight: the largest weights a registration
// may carry neither overflow nor lose precision: equal weights share
// equally.
func TestWeightedRoundRobinAtMaxWeight(t *testing.T) {
	p := build(t, "weighted_round_robin")
	c := cands(3)
	for i := range c {
		c[i].Weight = events.MaxWeight
	}
	count := make([]int, len(c))
	for range 30 {
		count[p.Pick(nil, c, 1, nil)[0]]++
	}
	if count[0] != 10 || count[1] != 10 || count[2] != 10 {
		t.Fatalf("counts %v, want 10 each", count)
	}
}

func TestPriority(t *testing.T) {
	p := build(t, "priority")
	c := cands(5)
	for i, pr := range []int{1, 3, 3, 0, 3} {
		c[i].Priority = pr
	}
	wantSeq(t, p, c, 3, "BCE", "CEB", "EBC", "BCE")
	wantSeq(t, p, c, 5, "CEBAD")
}

func TestLeastUsed(t *testing.T) {
	p := build(t, "least_used")
	c := cands(5)
	for i, l := range []float64{0.5, 0.25, 0.25, 0.25, 0.75} {
		c[i].Load = l
	}
	// Ties rotate.
	wantSeq(t, p, c, 2, "BC", "CD", "DB", "BC")
	wantSeq(t, p, c, 5, "CDBAE")
	// B leaves and an idle F joins; the tie among C and D rotates no
	// further as F is always first (only the first PE moves on, as rsplib).
	c = append([]Candidate{c[0]}, c[2:]...)
	c = append(c, Candidate{ID: "F"})
	wantSeq(t, p, c, 2, "FD", "FC", "FC")
}

func TestMostUsed(t *testing.T) {
	p := build(t, "most_used")
	c := cands(4)
	for i, l := range []float64{0.5, 0.75, 0.75, 0.25} {
		c[i].Load = l
	}
	wantSeq(t, p, c, 2, "BC", "CB", "BC")
	wantSeq(t, p, c, 4, "CBAD")
}

func TestPriorityLeastUsed(t *testing.T) {
	p := build(t, "priority_least_used")
	c := []Candidate{
		{ID: "A", Load: 0.5},
		{ID: "B", Load: 0.25, LoadIncrement: 0.5},
		{ID: "C", Load: 0.25, LoadIncrement: 0.125},
		{ID: "D", Load: 0.5},
		{ID: "E", Load: 0.75, LoadIncrement: 0.5}, // saturates at 1
		{ID: "F", Load: 1},
	}
	wantSeq(t, p, c, 6, "CADBEF", "CDABEF", "CDABEF")
}

func TestLeastUsedDegradation(t *testing.T) {
	p := build(t, "least_used_degradation").(*ordered)
	c := cands(3)
	for i, l := range []float64{0.125, 0.25, 0.375} {
		c[i].Load, c[i].Degradation, c[i].Rev = l, 0.25, 1
	}
	// Every PE of an answer has its counter grow by 0.25.
	wantSeq(t, p, c, 2, "AB", "CA", "BA", "CB")
	if d := p.tab.at(1).deg; d != 0.75 {
		t.Fatalf("B's counter is %g, want 0.75", d)
	}
	// B re-registers: its counter resets.
	c[1].Rev = 2
	wantSeq(t, p, c, 2, "BA")
	if d := p.tab.at(1).deg; d != 0.25 {
		t.Fatalf("B's counter is %g after re-registering and one selection, want 0.25", d)
	}
	// The counter saturates at 1.
	for range 10 {
		p.Pick(nil, c, 3, nil)
	}
	if d := p.tab.at(0).deg; d != 1 {
		t.Fatalf("A's counter is %g, want 1", d)
	}

	// A PE left out of some resolutions (excluded) keeps its counter.
	c[0].Rev = 9
	p.Pick(nil, c, 1, nil) // A: 0.125 + 0.25
	p.Pick(nil, c[1:], 2, nil)
	p.Pick(nil, c, 3, nil)
	if i, ok := p.tab.find("A"); !ok || p.tab.ents[i].deg != 0.5 {
		t.Fatalf("A's counter after an exclusion: %+v", p.tab.ents)
	}
}

func TestPriorityLeastUsedDegradation(t *testing.T) {
	p := build(t, "priority_least_used_degradation")
	c := []Candidate{
		{ID: "A", Load: 0.25, LoadIncrement: 0.25, Degradation: 0.25},
		{ID: "B", LoadIncrement: 0.125, Degradation: 0.5},
		{ID: "C", Load: 0.375, Degradation: 0.125},
	}
	wantSeq(t, p, c, 1, "B", "C", "A", "C", "B", "C")
}

func TestStateOfVanishedPEsIsDropped(t *testing.T) {
	for _, name := range []string{"least_used_degradation", "priority_least_used_degradation", "weighted_round_robin"} {
		p := build(t, name).(*ordered)
		old := cands(5)
		p.Pick(nil, old, 3, nil)
		c := make([]Candidate, 5)
		for i := range c {
			c[i] = Candidate{ID: "N" + old[i].ID, Weight: 1}
		}
		for range 2 * keepFor {
			p.Pick(nil, c, 3, nil)
		}
		if len(p.tab.ents) != len(c) {
			t.Fatalf("%s: %d entries kept for %d members", name, len(p.tab.ents), len(c))
		}
	}
}
