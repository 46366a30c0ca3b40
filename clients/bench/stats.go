// Package bench measures rsp on loopback next to its baselines, in the
// same run and on the same servers, and writes the figures as a Markdown
// report (and a plot): `rsp bench`. Every rsp figure has the figure of its
// baseline beside it, measured with the same connection setup and payload
// size; warm-up is excluded and errors are counted.
package bench

import (
	"slices"
	"time"
)

// Stats summarizes one measurement: completed operations over the measured
// window, errors, and latency percentiles from every recorded sample.
type Stats struct {
	Ops     int
	Errors  int
	Elapsed time.Duration
	P50     time.Duration
	P99     time.Duration
}

// PerSec is completed operations per second.
func (s Stats) PerSec() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Ops) / s.Elapsed.Seconds()
}

// Percentile is the p-quantile (0 ≤ p ≤ 1) of sorted by the nearest-rank
// method: the smallest sample with at least p of all samples at or below
// it; 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// nearest rank: ceil(p*n), 1-based
	rank := int(p*float64(n) + 0.999999999)
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// Summarize sorts samples in place and returns their stats; errors and
// elapsed are passed through.
func Summarize(samples []time.Duration, errors int, elapsed time.Duration) Stats {
	slices.Sort(samples)
	return Stats{
		Ops: len(samples), Errors: errors, Elapsed: elapsed,
		P50: Percentile(samples, 0.50), P99: Percentile(samples, 0.99),
	}
}

// Ratio is a/b, or 0 when b is 0.
func Ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
