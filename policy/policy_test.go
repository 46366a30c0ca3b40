package policy

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/rserpool/rsp/events"
)

// cands returns n candidates with ids A, B, C, ...
func cands(n int) []Candidate {
	c := make([]Candidate, n)
	for i := range c {
		c[i].ID = string(rune('A' + i))
	}
	return c
}

// build makes a picker of policy name with a fixed seed.
func build(t testing.TB, name string) Picker {
	t.Helper()
	b, ok := Get(name)
	if !ok {
		t.Fatalf("%s not registered", name)
	}
	return b.(*builtin).build(rand.New(rand.NewPCG(1, 2)))
}

// ids spells the ids of the picked candidates: "BCE".
func ids(c []Candidate, picked []int) string {
	var s strings.Builder
	for _, i := range picked {
		s.WriteString(c[i].ID)
	}
	return s.String()
}

// wantSeq picks once per want entry and compares the ids.
func wantSeq(t *testing.T, p Picker, c []Candidate, n int, want ...string) {
	t.Helper()
	for k, w := range want {
		if got := ids(c, p.Pick(nil, c, n, nil)); got != w {
			t.Fatalf("selection %d: got %s, want %s", k, got, w)
		}
	}
}

var allPolicies = []string{
	"round_robin", "weighted_round_robin", "random", "weighted_random", "priority",
	"least_used", "least_used_degradation", "priority_least_used", "randomized_least_used",
	"most_used", "priority_least_used_degradation", "randomized_priority_least_used",
}

func TestRegistry(t *testing.T) {
	if got, want := Names(), slices.Sorted(slices.Values(allPolicies)); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	if _, ok := Get("nope"); ok {
		t.Fatal("unknown policy found")
	}
	if _, ok := Get(Default); !ok {
		t.Fatal("default policy not registered")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("registering a name twice did not panic")
		}
	}()
	Register(&builtin{name: "random"})
}

func TestValidate(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		policy string
		c      Candidate
		field  string
		rule   string // a part of the message
	}{
		{"weighted_round_robin", Candidate{}, "policy.weight", "weighted_round_robin needs a weight ≥ 1"},
		{"weighted_random", Candidate{Weight: 0}, "policy.weight", "weighted_random needs a weight ≥ 1"},
		{"weighted_random", Candidate{Weight: -2}, "policy.weight", "needs a weight ≥ 1"},
		{"round_robin", Candidate{Weight: -1}, "policy.weight", "not in 1..4294967295 (or absent)"},
		{"weighted_round_robin", Candidate{Weight: 1<<63 - 1}, "policy.weight", "not in 1..4294967295"},
		{"priority", Candidate{Priority: -1}, "policy.priority", "not in 0..4294967295"},
		{"priority", Candidate{Priority: 1 << 32}, "policy.priority", "not in 0..4294967295"},
		{"least_used", Candidate{Load: 1.5}, "policy.load", "[0, 1]"},
		{"least_used", Candidate{Load: -0.01}, "policy.load", "[0, 1]"},
		{"randomized_least_used", Candidate{Load: nan}, "policy.load", "NaN"},
		{"least_used_degradation", Candidate{Degradation: 2}, "policy.degradation", "[0, 1]"},
		{"least_used_degradation", Candidate{Degradation: nan}, "policy.degradation", "NaN"},
		{"priority_least_used", Candidate{LoadIncrement: -1}, "policy.load_increment", "[0, 1]"},
		{"randomized_priority_least_used", Candidate{LoadIncrement: nan}, "policy.load_increment", "NaN"},
	}
	for _, c := range cases {
		b, _ := Get(c.policy)
		for _, err := range []error{b.Validate(c.c), ValidateParams(c.policy, c.c)} {
			var fe *events.FieldError
			if !errors.As(err, &fe) {
				t.Errorf("%s %+v: got %v, want a *events.FieldError", c.policy, c.c, err)
				continue
			}
			if fe.Field != c.field || !strings.Contains(fe.Rule, c.rule) {
				t.Errorf("%s %+v: got %q, want field %s and a rule with %q", c.policy, c.c, err, c.field, c.rule)
			}
		}
	}
	ok := Candidate{ID: "A", Weight: 1, Priority: 0, Load: 1, Degradation: 0, LoadIncrement: 1}
	for _, name := range allPolicies {
		if err := ValidateParams(name, ok); err != nil {
			t.Errorf("%s refused %+v: %v", name, ok, err)
		}
	}
	if err := ValidateParams("round_robin", Candidate{}); err != nil {
		t.Errorf("round_robin refused no parameters: %v", err)
	}
	err := ValidateParams("fastest", ok)
	var fe *events.FieldError
	if !errors.As(err, &fe) || fe.Field != "policy.name" || !strings.Contains(fe.Rule, "least_used_degradation") {
		t.Fatalf("unknown policy: got %v, want a policy.name error listing the policies", err)
	}
}

func TestEdgeCases(t *testing.T) {
	for _, name := range allPolicies {
		p := build(t, name)
		c := cands(3)
		for i := range c {
			c[i].Weight = 1
		}
		if got := p.Pick(nil, c, 0, nil); len(got) != 0 {
			t.Errorf("%s: n=0 gave %v", name, got)
		}
		if got := p.Pick(nil, nil, 3, nil); len(got) != 0 {
			t.Errorf("%s: no candidates gave %v", name, got)
		}
		got := p.Pick([]int{7}, c, 5, nil)
		if len(got) != 4 || got[0] != 7 {
			t.Errorf("%s: want dst kept and all 3 candidates appended, got %v", name, got)
		}
		if s := slices.Sorted(slices.Values(got[1:])); !slices.Equal(s, []int{0, 1, 2}) {
			t.Errorf("%s: not distinct: %v", name, got)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	full := cands(20)
	for i := range full {
		full[i].Weight = 1 + i%4
		full[i].Load = float64(i%5) / 5
		full[i].Degradation = 0.05
		full[i].Meta = map[string]string{"zone": string(rune('a' + i%3))}
	}
	for _, name := range allPolicies {
		b, _ := Get(name)
		p := b.Build()
		done := make(chan struct{})
		for g := range 8 {
			go func() {
				defer func() { done <- struct{}{} }()
				var dst [8]int
				for k := range 500 {
					c := full[(g+k)%5:] // members come and go
					c = c[:len(c)-(k%3)]
					var got []int
					if k%2 == 0 {
						got = p.Pick(dst[:0], c, 3, nil)
					} else {
						got = Select(p, dst[:0], c, 3, map[string]string{"zone": "b"})
					}
					if len(got) != 3 || got[0] == got[1] || got[1] == got[2] || got[0] == got[2] {
						t.Errorf("%s: got %v", name, got)
						return
					}
				}
			}()
		}
		for range 8 {
			<-done
		}
	}
}
