package policy

import (
	"slices"
	"testing"
)

// zoned returns candidates A, B, ... in the given zones.
func zoned(zones ...string) []Candidate {
	c := cands(len(zones))
	for i, z := range zones {
		c[i].Meta = map[string]string{"zone": z}
		c[i].Weight = 1
	}
	return c
}

func selectSeq(t *testing.T, p Picker, c []Candidate, n int, hint map[string]string, want ...string) {
	t.Helper()
	for k, w := range want {
		if got := ids(c, Select(p, nil, c, n, hint)); got != w {
			t.Fatalf("selection %d: got %s, want %s", k, got, w)
		}
	}
}

func TestSelectZone(t *testing.T) {
	c := zoned("a", "b", "a", "b", "c", "a")
	zb := map[string]string{"zone": "b"}
	// Preferred first, by the policy among them; then the policy over the
	// rest. One selection per call: the rotation moves on by one.
	selectSeq(t, build(t, "round_robin"), c, 3, zb, "BDA", "DBC")
	selectSeq(t, build(t, "round_robin"), c, 1, zb, "B", "D", "B")
	// Enough preferred PEs: only they.
	selectSeq(t, build(t, "round_robin"), c, 3, map[string]string{"zone": "a"}, "ACF", "CFA")

	for i, l := range []float64{0.5, 0.75, 0.25, 0.5, 0, 0.125} {
		c[i].Load = l
	}
	selectSeq(t, build(t, "least_used"), c, 4, zb, "DBEF", "DBEF")
	selectSeq(t, build(t, "least_used"), c, 6, zb, "DBEFCA")
	selectSeq(t, build(t, "most_used"), c, 3, zb, "BDA")

	// Random policies: every answer starts with the zone's PEs.
	for _, name := range allPolicies {
		p := build(t, name)
		for range 200 {
			got := Select(p, nil, c, 4, zb)
			if s := ids(c, got[:2]); s != "BD" && s != "DB" {
				t.Fatalf("%s: got %s, want B and D first", name, ids(c, got))
			}
			if len(got) != 4 || got[2] == got[3] || slices.Contains(got[:2], got[2]) || slices.Contains(got[:2], got[3]) {
				t.Fatalf("%s: got %v", name, got)
			}
		}
	}

	// Weighted random inside the zone.
	c = zoned("a", "b", "a", "b", "b")
	c[1].Weight, c[3].Weight, c[4].Weight = 1, 2, 5
	p := build(t, "weighted_random")
	counts := make([]int, len(c))
	for range 30000 {
		counts[Select(p, nil, c, 2, zb)[0]]++
	}
	if counts[0]+counts[2] != 0 {
		t.Fatalf("a PE out of the zone came first: %v", counts)
	}
	if chi := chiSquare([]int{counts[1], counts[3], counts[4]}, normalize(1, 2, 5)); chi > chi999[2] {
		t.Fatalf("first picks in the zone %v do not follow 1:2:5 (chi-square %.1f)", counts, chi)
	}

	// Weighted round robin runs its rounds among the preferred PEs only:
	// the others earn no credit meanwhile.
	c = zoned("a", "b", "b")
	c[1].Weight, c[2].Weight = 2, 1
	wrr := build(t, "weighted_round_robin").(*ordered)
	selectSeq(t, wrr, c, 1, zb, "B", "C", "B", "B", "C", "B")
	if cr := wrr.tab.at(0).credit; cr != 0 {
		t.Fatalf("A earned credit %d while not preferred", cr)
	}
}

func TestSelectWithoutApplicableHintIsPick(t *testing.T) {
	c := zoned("a", "b", "a", "c")
	for i := range c {
		c[i].Load = float64(i%2) / 2
		c[i].Weight = 1 + i
	}
	for _, name := range allPolicies {
		for _, hint := range []map[string]string{nil, {}, {"colour": "red"}, {"zone": "x"}} {
			p, q := build(t, name), build(t, name)
			for k := range 50 {
				got, want := Select(p, nil, c, 2, hint), q.Pick(nil, c, 2, hint)
				if !slices.Equal(got, want) {
					t.Fatalf("%s, hint %v, selection %d: Select %v, Pick %v", name, hint, k, got, want)
				}
			}
		}
	}
}

// rackHint is a second hint, to test several at once.
type rackHint struct{}

func (rackHint) Key() string                             { return "rack" }
func (rackHint) Prefers(c *Candidate, value string) bool { return c.Meta["rack"] == value }

func TestSeveralHints(t *testing.T) {
	if !slices.Contains(HintKeys(), "rack") { // -count > 1
		RegisterHint(rackHint{})
	}
	if !slices.Contains(HintKeys(), "rack") || !slices.Contains(HintKeys(), HintZone) {
		t.Fatalf("HintKeys() = %v", HintKeys())
	}
	c := zoned("a", "a", "b", "b", "a")
	for i, r := range []string{"1", "2", "1", "2", "2"} {
		c[i].Meta["rack"] = r
	}
	// Both hints: E (a, 2) and B; then one of them: A, D; then C.
	selectSeq(t, build(t, "round_robin"), c, 5, map[string]string{"zone": "a", "rack": "2"}, "BEADC", "EBDAC")

	defer func() {
		if recover() == nil {
			t.Fatal("registering a hint twice did not panic")
		}
	}()
	RegisterHint(zoneHint{})
}

// firstN is a plug-in policy that is not a TieredPicker.
type firstN struct{ calls int }

func (f *firstN) Pick(dst []int, cands []Candidate, n int, _ map[string]string) []int {
	f.calls++
	for i := range min(n, len(cands)) {
		dst = append(dst, i)
	}
	return dst
}

func TestSelectPlainPicker(t *testing.T) {
	c := zoned("a", "b", "a", "b", "c")
	p := new(firstN)
	if got := ids(c, Select(p, []int{9}, c, 3, map[string]string{"zone": "b"})[1:]); got != "BDA" {
		t.Fatalf("got %s, want BDA", got)
	}
	if p.calls != 2 {
		t.Fatalf("%d picks, want one per tier used", p.calls)
	}
	if got := ids(c, Select(p, nil, c, 2, map[string]string{"zone": "c"})); got != "EA" {
		t.Fatalf("got %s, want EA", got)
	}
}
