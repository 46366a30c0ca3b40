package server

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rserpool/rsp/events"
)

// Metrics are the Prometheus metrics of the name-server replicas of one
// process. Make them once with NewMetrics and give them to every replica
// (Config.Metrics). Counters that replicas add to are labelled by scope;
// what is read from a replica's own state at scrape time (pool sizes,
// resolutions answered, consumer lag) is also labelled by replica.
type Metrics struct {
	eventsApplied  *prometheus.CounterVec
	eventsRefused  *prometheus.CounterVec
	resolveErrors  *prometheus.CounterVec
	resolveSeconds *prometheus.HistogramVec
	changes        *prometheus.CounterVec
	removals       *prometheus.CounterVec
	reports        *prometheus.CounterVec
	holds          *prometheus.CounterVec

	mu      sync.Mutex
	servers map[*NameServer]struct{}
}

// Metric names, for dashboards and tests.
const (
	MetricEventsApplied     = "rsp_events_applied_total"
	MetricEventsRefused     = "rsp_events_refused_total"
	MetricResolutions       = "rsp_resolutions_total"
	MetricResolutionErrors  = "rsp_resolution_errors_total"
	MetricResolutionSeconds = "rsp_resolution_duration_seconds"
	MetricPoolElements      = "rsp_pool_elements"
	MetricChanges           = "rsp_changes_published_total"
	MetricRemovals          = "rsp_removals_total"
	MetricFailureReports    = "rsp_failure_reports_total"
	MetricConsumerPending   = "rsp_consumer_pending_messages"
	MetricConsumerAckPend   = "rsp_consumer_ack_pending_messages"
	MetricExpiryHolds       = "rsp_expiry_holds_total"
)

var (
	descPoolElements = prometheus.NewDesc(MetricPoolElements,
		"PEs in the pool, as this replica's view holds it.", []string{"replica", "scope", "pool", "policy"}, nil)
	descResolutions = prometheus.NewDesc(MetricResolutions,
		"Resolutions of the pool answered by this replica (since the pool last appeared in its view).", []string{"replica", "scope", "pool", "policy"}, nil)
	descConsumerPending = prometheus.NewDesc(MetricConsumerPending,
		"Messages of a shared JetStream consumer not yet delivered to any replica (its lag).", []string{"replica", "consumer"}, nil)
	descConsumerAckPending = prometheus.NewDesc(MetricConsumerAckPend,
		"Messages of a shared JetStream consumer delivered and not yet acknowledged.", []string{"replica", "consumer"}, nil)
)

// NewMetrics makes the metrics and registers them with reg (nil: not
// registered anywhere, as replicas without Config.Metrics use them).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		eventsApplied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricEventsApplied,
			Help: "Events applied: registrations, deregistrations, and failure reports counted."}, []string{"scope", "kind"}),
		eventsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricEventsRefused,
			Help: "Events refused, by the outcome's error code (bad_request, forbidden, conflict, stale, unavailable, not_found)."}, []string{"scope", "kind", "code"}),
		resolveErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricResolutionErrors,
			Help: "Resolution requests answered with an error, by code."}, []string{"scope", "code"}),
		resolveSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MetricResolutionSeconds,
			Help:    "Time from receiving a resolution request to sending its signed answer.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 15)}, []string{"scope"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricChanges,
			Help: "Pool changes published on rsp.<scope>.changes.<pool>."}, []string{"scope", "op", "reason"}),
		removals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricRemovals,
			Help: "PEs taken out of the name space, by reason (deregistered, expired, failed, disconnected)."}, []string{"scope", "reason"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricFailureReports,
			Help: "Failure reports: counted, refused (signature, authorization, body) or about an unknown PE."}, []string{"scope", "result"}),
		holds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MetricExpiryHolds,
			Help: "Times a replica began to hold expiry because renewals could not be stored (an election, a lost node, its own reconnect, its start)."}, []string{"scope"}),
		servers: map[*NameServer]struct{}{},
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.eventsApplied, m.eventsRefused, m.resolveErrors, m.resolveSeconds,
		m.changes, m.removals, m.reports, m.holds, stateCollector{m}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) add(n *NameServer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.servers[n] = struct{}{}
}

func (m *Metrics) remove(n *NameServer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.servers, n)
}

// changed counts a published change (and a removal).
func (m *Metrics) changed(ch *events.Change) {
	m.changes.WithLabelValues(ch.Scope, ch.Op, ch.Reason).Inc()
	if ch.Op == events.OpRemove {
		m.removals.WithLabelValues(ch.Scope, ch.Reason).Inc()
	}
}

// held counts a replica's hold of expiry in scope.
func (m *Metrics) held(scope string) { m.holds.WithLabelValues(scope).Inc() }

// event counts an event's result: applied, or refused with the outcome's
// error.
func (m *Metrics) event(scope string, kind events.Kind, refused *events.Error) {
	if refused != nil {
		m.eventsRefused.WithLabelValues(scope, string(kind), refused.Code).Inc()
		return
	}
	m.eventsApplied.WithLabelValues(scope, string(kind)).Inc()
}

// stateCollector reads, at scrape time, what the replicas hold: pool sizes
// and resolutions answered (from their views) and the lag of their shared
// consumers (asked of JetStream).
type stateCollector struct{ m *Metrics }

// consumerInfoTimeout bounds the JetStream requests of one scrape.
const consumerInfoTimeout = 2 * time.Second

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descPoolElements
	ch <- descResolutions
	ch <- descConsumerPending
	ch <- descConsumerAckPending
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	servers := make([]*NameServer, 0, len(c.m.servers))
	for n := range c.m.servers {
		servers = append(servers, n)
	}
	c.m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), consumerInfoTimeout)
	defer cancel()
	for _, n := range servers {
		id := n.ID()
		for _, scope := range n.cfg.Scopes {
			for _, p := range n.PoolSummaries(scope) {
				ch <- prometheus.MustNewConstMetric(descPoolElements, prometheus.GaugeValue, float64(p.Size), id, scope, p.Pool, p.Policy)
				ch <- prometheus.MustNewConstMetric(descResolutions, prometheus.CounterValue, float64(p.Resolutions), id, scope, p.Pool, p.Policy)
			}
		}
		for _, s := range n.consumers {
			pending, ackPending, err := s.lag(ctx)
			if err != nil {
				// Left out of this scrape (JetStream did not answer in
				// time); a missing series shows it.
				n.cfg.Logger.Debug("consumer lag not read", "consumer", s.what, "err", err)
				continue
			}
			ch <- prometheus.MustNewConstMetric(descConsumerPending, prometheus.GaugeValue, float64(pending), id, s.what)
			ch <- prometheus.MustNewConstMetric(descConsumerAckPending, prometheus.GaugeValue, float64(ackPending), id, s.what)
		}
	}
}
