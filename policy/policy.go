// Package policy holds rsp's pool policies: how a name server (or a client
// with a cached pool) ranks a pool's PEs for one selection.
//
// A policy is a plug-in: a Builder registered by name with Register. The
// name server looks policies up by the name a pool's first PE asked for, so
// a new policy is added by registering it, without touching the name server.
// The shape follows grpc-go's balancer: a Builder makes one Picker per pool,
// and the Picker keeps whatever state the policy needs between selections.
//
// # Policies
//
// The RFC 5356 policies, as RFC 5356 and rsplib (its reference
// implementation) define them, then rsp's plug-ins. "Round robin among
// equals" means: candidates of equal rank come in PE-id order, cyclically,
// starting just after the PE that came first in the previous answer.
//
//   - round_robin: cyclic order over the members sorted by PE id; no parameters.
//   - weighted_round_robin: each PE weight times per round of Σweight
//     selections, interleaved (smooth weighted round robin: 3,1,1 gives
//     A B A C A); weight ≥ 1.
//   - random: uniform; no parameters.
//   - weighted_random: probability proportional to weight; weight ≥ 1.
//   - priority: highest priority first, round robin among equals; priority.
//   - least_used: lowest load first, round robin among equals; load.
//   - least_used_degradation: lowest load + counter first, round robin among
//     equals; the PE's counter grows by its degradation each time it is
//     selected and resets when it re-registers; load, degradation.
//   - priority_least_used: lowest load + load_increment first, round robin
//     among equals; load, load_increment.
//   - randomized_least_used: probability proportional to 1 − load, never
//     zero (a floor of one unit of RFC 5356's 32-bit load scale, about 2⁻³²);
//     load.
//   - most_used: highest load first, round robin among equals; load.
//   - priority_least_used_degradation: lowest load + load_increment +
//     counter first (the counter as in least_used_degradation), round robin
//     among equals; load, load_increment, degradation.
//   - randomized_priority_least_used: probability proportional to
//     1 − min(1, load + load_increment), never zero; load, load_increment.
//
// As in rsplib, sums of load, load_increment and counter saturate at 1
// (100 %), and so does the counter: PEs at 100 % tie and take turns.
//
// A Pick returns at most n distinct PEs, best first; the random policies
// sample without repetition (each next PE drawn from those left, in
// proportion to their weights). A Pick advances a policy's state by one
// selection, as rsplib does: the rotation moves on by one PE, so successive
// round-robin answers overlap, (A,B,C), (B,C,D), and weighted round robin
// charges only the first PE of the answer. For the degradation counters,
// though, a selection counts every PE of the answer: each returned PE's
// counter grows, since a pool user may use any of them.
//
// State is kept per PE id, so members may join and leave between calls
// (and a resolution may exclude some); the state of a PE that has not been
// among the candidates for 256 to 320 selections is dropped, so memory
// stays bounded by the pool's recent members.
//
// # Replicas
//
// Every name-server replica (and every client cache) keeps its own picker
// state. Round robin therefore rotates per replica: answers from different
// replicas each rotate, but not in one global sequence. The degradation
// counters are a per-replica approximation: replicas share resolutions in a
// NATS queue group, so each counts only the selections it makes itself —
// with r replicas about 1/r of them — and a PE's counter resets whenever
// it re-registers (renews), which every replica sees. Exact global counters
// would need a replicated write per resolution (a JetStream round trip),
// far slower than the resolution itself, so rsp does not keep them. What
// it means for accuracy: between two renewals of a PE, its counter on each
// replica lags the true count by a factor of about r, so a PE that is
// picked often is pushed back about r times more slowly than on a single
// registrar; the load a PE reports at its next renewal corrects it.
//
// # Hints
//
// A pool user's resolution may carry hints (key → value). A Hint plug-in,
// registered with RegisterHint, says which candidates it prefers for a
// value; Select ranks the candidates every applicable hint prefers first,
// ordered by the pool policy among them, and fills the remaining slots by
// the pool policy over the rest (with several hints, candidates that
// satisfy more of them come first). The built-in zone hint prefers the
// candidates whose Meta["zone"] equals the hint's "zone". Pickers that
// implement TieredPicker (every built-in one) do that in one selection.
package policy

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	"github.com/rserpool/rsp/events"
)

// Candidate is what a policy sees of one PE.
type Candidate struct {
	ID string
	// Rev changes whenever the PE re-registers (its name-space revision);
	// policies with per-PE counters reset them when it changes.
	Rev uint64
	// Weight is ≥ 1 when given, 0 when absent.
	Weight   int
	Priority int
	// Load, Degradation and LoadIncrement are fractions in [0, 1].
	Load          float64
	Degradation   float64
	LoadIncrement float64
	Meta          map[string]string
}

// Picker ranks the PEs of one pool. It must be safe for concurrent use.
type Picker interface {
	// Pick appends to dst the indexes into cands of at most n distinct
	// candidates, best first, and advances the policy's state by one
	// selection. cands is in a stable order (by PE id), has distinct ids,
	// and is not empty. The built-in policies ignore hint; Select applies
	// the registered Hint plug-ins.
	Pick(dst []int, cands []Candidate, n int, hint map[string]string) []int
}

// TieredPicker is a Picker that can rank candidates in tiers within one
// selection. Select uses it when a hint applies.
type TieredPicker interface {
	Picker
	// PickTiered is Pick, except that every candidate of tier t is ranked
	// before every candidate of tier t+1, and the policy orders each tier.
	// tier has one entry per candidate.
	PickTiered(dst []int, cands []Candidate, n int, hint map[string]string, tier []uint8) []int
}

// Builder makes the Picker of one pool.
type Builder interface {
	Name() string
	Build() Picker
	// Validate checks one PE's parameters for this policy; the error is an
	// *events.FieldError naming the field (policy.weight, ...).
	Validate(c Candidate) error
}

var (
	mu       sync.RWMutex
	builders = map[string]Builder{}
)

// Register adds a policy; registering a name twice panics, as it is a
// programming error.
func Register(b Builder) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := builders[b.Name()]; dup {
		panic(fmt.Sprintf("policy: %q registered twice", b.Name()))
	}
	builders[b.Name()] = b
}

// Get returns the policy registered under name.
func Get(name string) (Builder, bool) {
	mu.RLock()
	defer mu.RUnlock()
	b, ok := builders[name]
	return b, ok
}

// Names lists the registered policies, sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(builders))
	for n := range builders {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ValidateParams checks c's parameters for the policy called name: an
// unknown name is an *events.FieldError on policy.name listing the known
// ones; otherwise it is that policy's Validate.
func ValidateParams(name string, c Candidate) error {
	b, ok := Get(name)
	if !ok {
		return events.Errf("policy.name", "%q is not a known policy (%s)", name, strings.Join(Names(), ", "))
	}
	return b.Validate(c)
}

// Default is the policy of a PE that names none.
const Default = "round_robin"

// builtin is a built-in policy: its Build makes pickers that use the
// process-wide random source; tests build them with a seeded one.
type builtin struct {
	name     string
	weighted bool // needs a weight ≥ 1
	build    func(r *rand.Rand) Picker
}

func (b *builtin) Name() string  { return b.name }
func (b *builtin) Build() Picker { return b.build(nil) }

// Validate checks every parameter a PE may give, whatever the policy uses,
// and that a weighted policy gets a weight.
func (b *builtin) Validate(c Candidate) error {
	if b.weighted && c.Weight < 1 {
		return events.Errf("policy.weight", "policy %s needs a weight ≥ 1, got %d", b.name, c.Weight)
	}
	return events.PolicyParams{Name: b.name, Weight: c.Weight, Priority: c.Priority, Load: c.Load,
		Degradation: c.Degradation, LoadIncrement: c.LoadIncrement}.Validate()
}

// floor is the least weight of a randomized least-used PE: one unit of
// RFC 5356's 32-bit load scale, as in rsplib, so a PE at 100 % load is
// drawn only when nothing else is left.
const floor = 1.0 / math.MaxUint32

var builtins = []*builtin{
	{name: "round_robin", build: func(*rand.Rand) Picker { return new(roundRobin) }},
	{name: "weighted_round_robin", weighted: true, build: func(*rand.Rand) Picker { return newOrdered(byWeightedRoundRobin) }},
	{name: "random", build: func(r *rand.Rand) Picker { return newRandom(r, nil) }},
	{name: "weighted_random", weighted: true, build: func(r *rand.Rand) Picker {
		return newRandom(r, func(c *Candidate) float64 { return float64(max(c.Weight, 1)) })
	}},
	{name: "priority", build: func(*rand.Rand) Picker { return newOrdered(byPriority) }},
	{name: "least_used", build: func(*rand.Rand) Picker { return newOrdered(byLeastUsed) }},
	{name: "least_used_degradation", build: func(*rand.Rand) Picker { return newOrdered(byLeastUsedDegradation) }},
	{name: "priority_least_used", build: func(*rand.Rand) Picker { return newOrdered(byPriorityLeastUsed) }},
	{name: "randomized_least_used", build: func(r *rand.Rand) Picker {
		return newRandom(r, func(c *Candidate) float64 { return max(floor, 1-c.Load) })
	}},
	{name: "most_used", build: func(*rand.Rand) Picker { return newOrdered(byMostUsed) }},
	{name: "priority_least_used_degradation", build: func(*rand.Rand) Picker { return newOrdered(byPriorityLeastUsedDegradation) }},
	{name: "randomized_priority_least_used", build: func(r *rand.Rand) Picker {
		return newRandom(r, func(c *Candidate) float64 { return max(floor, 1-min(1, c.Load+c.LoadIncrement)) })
	}},
}

func init() {
	for _, b := range builtins {
		Register(b)
	}
}
