package monitor

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rserpool/rsp/events"
)

// The name-server replicas of each scope, as their beats on
// rsp.<scope>.nameservers.<id> tell (events.NameServerBeat): which are up,
// and how many resolutions per second each answers, so that the page shows
// every replica's share and not only its own.

// Name-server states on the page.
const (
	stateUp      = "up"      // beats arrive
	stateStopped = "stopped" // its last beat said it stops
	stateSilent  = "silent"  // no beat for silentAfter: it died or is cut off
)

const (
	// silentAfter: a replica whose beats stopped this long is silent.
	silentAfter = 3 * time.Second
	// forgetAfter: a stopped or silent replica leaves the page.
	forgetAfter = time.Minute
)

type nameServerStats struct {
	ID              string    `json:"id"`
	State           string    `json:"state"`
	LastSeen        time.Time `json:"last_seen"`
	StartedAt       time.Time `json:"started_at"`
	Key             string    `json:"key"`
	Pools           int       `json:"pools"`
	PEs             int       `json:"pes"`
	ResolutionsPerS float64   `json:"resolutions_per_s"`
}

// replicaBeats are the last two beats of one replica in one scope.
type replicaBeats struct {
	last, prev events.NameServerBeat
	seen       time.Time // arrival of last, by this process's clock
}

// nameServers holds the beats of every scope's replicas.
type nameServers struct {
	mu    sync.Mutex
	beats map[string]map[string]*replicaBeats // scope → id
}

func newNameServers() *nameServers {
	return &nameServers{beats: map[string]map[string]*replicaBeats{}}
}

// heard takes a beat; one not newer than the last of its replica (the
// same beat heard twice) changes nothing.
func (ns *nameServers) heard(b events.NameServerBeat, now time.Time) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ids := ns.beats[b.Scope]
	if ids == nil {
		ids = map[string]*replicaBeats{}
		ns.beats[b.Scope] = ids
	}
	rb := ids[b.ID]
	if rb == nil {
		rb = &replicaBeats{}
		ids[b.ID] = rb
	}
	if !b.Time.After(rb.last.Time) {
		return
	}
	rb.prev, rb.last, rb.seen = rb.last, b, now
}

// rates returns the replicas of scope (sorted by id) and the resolutions
// per second of each pool, summed over the replicas that are up; it
// forgets replicas gone for forgetAfter.
func (ns *nameServers) rates(scope string, now time.Time) ([]nameServerStats, map[string]float64) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	out := []nameServerStats{}
	pools := map[string]float64{}
	for id, rb := range ns.beats[scope] {
		st := nameServerStats{ID: id, State: stateUp, LastSeen: rb.last.Time, StartedAt: rb.last.StartedAt, Key: rb.last.Key,
			Pools: rb.last.Pools, PEs: rb.last.PEs}
		switch {
		case rb.last.Stopping:
			st.State = stateStopped
		case now.Sub(rb.seen) > silentAfter:
			st.State = stateSilent
		}
		if st.State != stateUp {
			if now.Sub(rb.seen) > forgetAfter {
				delete(ns.beats[scope], id)
				continue
			}
		} else if dt := rb.last.Time.Sub(rb.prev.Time).Seconds(); !rb.prev.Time.IsZero() && dt > 0 {
			for pool, n := range rb.last.Resolutions {
				prev := rb.prev.Resolutions[pool]
				if prev > n { // the pool left this replica's view and came back
					prev = 0
				}
				r := float64(n-prev) / dt
				pools[pool] += r
				st.ResolutionsPerS += r
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b nameServerStats) int { return strings.Compare(a.ID, b.ID) })
	return out, pools
}

var descReplicas = prometheus.NewDesc("rsp_nameserver_replicas",
	"Name-server replicas of the scope by state, as their beats tell (up; stopped: said so; silent: no beat for 3 s), seen from this process.",
	[]string{"scope", "state"}, nil)

// Collector exports the replicas of each attached scope by state
// (rsp_nameserver_replicas), so that an alert can fire when one goes
// silent.
func (m *Monitor) Collector() prometheus.Collector { return replicasCollector{m} }

type replicasCollector struct{ m *Monitor }

func (c replicasCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descReplicas }

func (c replicasCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, s := range c.m.scopeServers() {
		list, _ := c.m.nameServers.rates(s.scope, now)
		counts := map[string]int{stateUp: 0, stateStopped: 0, stateSilent: 0}
		for _, r := range list {
			counts[r.State]++
		}
		for state, n := range counts {
			ch <- prometheus.MustNewConstMetric(descReplicas, prometheus.GaugeValue, float64(n), s.scope, state)
		}
	}
}
