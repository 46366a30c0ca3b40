// Package policy holds rsp's pool policies: how a name server (or a client
// with a cached pool) ranks a pool's PEs for one selection.
//
// A policy is a plug-in: a Builder registered by name with Register. The
// name server looks policies up by the name a pool's first PE asked for, so
// a new policy is added by registering it, without touching the name server.
// The shape follows grpc-go's balancer: a Builder makes one Picker per pool,
// and the Picker keeps whatever state the policy needs between selections.
//
// Policies:
//   - round_robin: cyclic order over the members sorted by PE id; each
//     selection starts one further, so answers overlap (A,B,C), (B,C,D).
//   - random: a uniform random sample without repetition.
package policy

import (
	"fmt"
	"slices"
	"sync"
)

// Candidate is what a policy sees of one PE.
type Candidate struct {
	ID string
	// Rev changes whenever the PE re-registers (its name-space revision);
	// policies with per-PE counters reset them when it changes.
	Rev           uint64
	Weight        int
	Priority      int
	Load          float64
	Degradation   float64
	LoadIncrement float64
	Meta          map[string]string
}

// Picker ranks the PEs of one pool. It must be safe for concurrent use.
type Picker interface {
	// Pick appends to dst the indexes into cands of at most n distinct
	// candidates, best first, and advances the policy's state by one
	// selection. cands is in a stable order (by PE id) and not empty.
	Pick(dst []int, cands []Candidate, n int, hint map[string]string) []int
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

// builderFunc turns a name and a constructor into a Builder.
type builderFunc struct {
	name  string
	build func() Picker
}

func (b builderFunc) Name() string             { return b.name }
func (b builderFunc) Build() Picker            { return b.build() }
func (b builderFunc) Validate(Candidate) error { return nil }

// Default is the policy of a PE that names none.
const Default = "round_robin"

func init() {
	Register(builderFunc{"round_robin", func() Picker { return new(roundRobin) }})
	Register(builderFunc{"random", func() Picker { return random{} }})
}
