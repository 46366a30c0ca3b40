// Package monitor serves what operators look at on a name server's HTTP
// listener (--metrics): Prometheus metrics (/metrics), health (/healthz,
// /readyz), and the live pool page (/) with its stream of server-sent
// events (/api/stream, described in STREAM.md) and a JSON snapshot
// (/api/pools).
package monitor

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/server"
)

//go:embed web
var webFS embed.FS

// Config configures a Monitor.
type Config struct {
	// Gatherer is served on /metrics; nil: no /metrics.
	Gatherer prometheus.Gatherer
	// StatsInterval is the period of the stream's stats; default 1 s.
	StatsInterval time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Monitor is the HTTP face of the name-server replicas of a process. It
// answers at once; /readyz and the page say "not ready" until Attach.
type Monitor struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	servers []*server.NameServer // nil until Attach
	clients map[*client]struct{}
	stops   []func()
	history []statsMsg // the last historyLen stats, oldest first

	nameServers *nameServers
	mirror      *mirror // what the open pages were told

	done     chan struct{} // closed by Close: streams end
	doneOnce sync.Once
}

// New makes a Monitor; serve Handler, then Attach the replicas once they
// run.
func New(cfg Config) *Monitor {
	if cfg.StatsInterval == 0 {
		cfg.StatsInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Monitor{cfg: cfg, log: cfg.Logger.With("component", "monitor"), clients: map[*client]struct{}{}, done: make(chan struct{}),
		nameServers: newNameServers(), mirror: newMirror()}
}

// Attach starts showing the replicas: their change streams and the beats
// of every replica of their scopes feed the page, and the Monitor is
// ready. It runs until Close.
func (m *Monitor) Attach(servers ...*server.NameServer) error {
	for _, n := range servers {
		stopChanges, err := n.WatchChanges(func(ch events.Change) { m.changed(n, ch) })
		if err != nil {
			m.Close()
			return err
		}
		stopBeats, err := n.WatchNameServers(func(b events.NameServerBeat) { m.nameServers.heard(b, time.Now()) })
		if err != nil {
			stopChanges()
			m.Close()
			return err
		}
		m.mu.Lock()
		m.stops = append(m.stops, stopChanges, stopBeats)
		m.mu.Unlock()
	}
	m.mu.Lock()
	m.servers = servers
	m.mu.Unlock()
	go m.statsLoop()
	go m.reconcileLoop()
	return nil
}

// Close ends the page streams and the change and beat subscriptions.
func (m *Monitor) Close() {
	m.doneOnce.Do(func() {
		close(m.done)
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, stop := range m.stops {
			stop()
		}
	})
}

func (m *Monitor) attached() []*server.NameServer {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.servers
}

// Handler serves the page, the stream, metrics and health.
func (m *Monitor) Handler() http.Handler {
	mux := http.NewServeMux()
	if m.cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(m.cfg.Gatherer, promhttp.HandlerOpts{ErrorLog: slogErrorLog{m.log}}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", m.readyz)
	mux.HandleFunc("GET /api/pools", m.pools)
	mux.HandleFunc("GET /api/stream", m.stream)
	web, _ := fs.Sub(webFS, "web")
	mux.Handle("GET /", http.FileServerFS(web))
	return mux
}

// ready is nil once every attached replica serves its scopes.
func (m *Monitor) ready() error {
	servers := m.attached()
	if servers == nil {
		return errors.New("starting: the name space is not loaded yet")
	}
	var errs []string
	for _, n := range servers {
		if err := n.Ready(); err != nil {
			errs = append(errs, fmt.Sprintf("replica %s (%s): %v", n.ID(), strings.Join(n.Scopes(), ","), err))
		}
	}
	if errs != nil {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

func (m *Monitor) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := m.ready(); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

func (m *Monitor) pools(w http.ResponseWriter, _ *http.Request) {
	if m.attached() == nil {
		http.Error(w, "not ready: the name space is not loaded yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(m.snapshot())
}

// slogErrorLog lets promhttp log through slog.
type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Println(v ...any) { l.log.Warn("metrics", "err", fmt.Sprint(v...)) }
