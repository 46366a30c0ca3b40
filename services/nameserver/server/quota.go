package server

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/rserpool/rsp/events"
)

// Quotas of one signer (a PE credential's key) in a scope, so that no
// credential can fill a scope's name space or keep its name servers busy
// with new PEs: at most maxPEs PEs, and new ones at most newRate a
// second (burst newBurst). Renewals are not limited: a signer's own PEs
// renew at their pace. Both are checked after the signature, so a forged
// header spends nobody's quota.
type quotas struct {
	maxPEs   int // <= 0: no limit
	newRate  rate.Limit
	newBurst int

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
	swept    time.Time
}

// Defaults of the quotas: far above what one credential of a normal
// installation registers (a deployment sharing one creds file included).
const (
	DefaultMaxPEsPerSigner = 10000
	DefaultNewPEsPerSecond = 1000
	newPEsBurstSeconds     = 2 // the burst: this many seconds' worth
	limiterSweepEvery      = time.Minute
)

func newQuotas(maxPEs int, perSecond float64) *quotas {
	q := &quotas{maxPEs: maxPEs, newRate: rate.Inf, limiters: map[string]*rate.Limiter{}}
	if perSecond > 0 {
		q.newRate, q.newBurst = rate.Limit(perSecond), max(1, int(perSecond*newPEsBurstSeconds))
	}
	return q
}

// admitNew says whether signer may add a PE now, owning owned already.
func (q *quotas) admitNew(signer string, owned int, now time.Time) *rejection {
	if q == nil {
		return nil
	}
	if q.maxPEs > 0 && owned >= q.maxPEs {
		return reject(events.CodeForbidden, "signer %s owns %d PEs in this scope, its limit (--max-pes-per-signer)", signer, owned)
	}
	if q.newRate == rate.Inf {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if now.Sub(q.swept) > limiterSweepEvery {
		// Forget the limiters that are full again: they hold nothing.
		for k, l := range q.limiters {
			if l.TokensAt(now) >= float64(q.newBurst) {
				delete(q.limiters, k)
			}
		}
		q.swept = now
	}
	l := q.limiters[signer]
	if l == nil {
		l = rate.NewLimiter(q.newRate, q.newBurst)
		q.limiters[signer] = l
	}
	if !l.AllowN(now, 1) {
		return reject(events.CodeUnavailable, "signer %s adds PEs faster than %g a second (--new-pes-per-second): try again later", signer, float64(q.newRate))
	}
	return nil
}
