package policy

import "github.com/rserpool/rsp/events"

// CandidateOf is what a policy sees of a PE registered with params, at
// revision rev of the name space. The name server's view and the client
// cache both build candidates with it.
func CandidateOf(id string, rev uint64, p events.PolicyParams, meta map[string]string) Candidate {
	return Candidate{
		ID: id, Rev: rev, Weight: p.Weight, Priority: p.Priority, Load: p.Load,
		Degradation: p.Degradation, LoadIncrement: p.LoadIncrement, Meta: meta,
	}
}
