package monitor

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// The messages of /api/stream (STREAM.md; schema schemas/monitor-stream.json).

type snapshotMsg struct {
	Time    time.Time    `json:"time"`
	Replica string       `json:"replica"`
	Scopes  []scopeState `json:"scopes"`
	// History holds the last stats (oldest first, without renewals), so
	// that a page's charts start filled.
	History []statsMsg `json:"history"`
}

type scopeState struct {
	Scope string      `json:"scope"`
	Pools []poolState `json:"pools"`
}

type poolState struct {
	Pool     string          `json:"pool"`
	Policy   string          `json:"policy"`
	Revision uint64          `json:"revision"`
	Elements []events.Record `json:"elements"`
}

type changeMsg struct {
	Time   time.Time      `json:"time"`
	Change events.Change  `json:"change"`
	Record *events.Record `json:"record"`
	Policy string         `json:"policy"`
}

type statsMsg struct {
	Time    time.Time    `json:"time"`
	Scopes  []scopeStats `json:"scopes"`
	Renewed []renewal    `json:"renewed"`
}

type scopeStats struct {
	Scope           string      `json:"scope"`
	ResolutionsPerS float64     `json:"resolutions_per_s"`
	Pools           []poolStats `json:"pools"`
	// NameServers are the scope's replicas, with their share of the
	// resolutions.
	NameServers []nameServerStats `json:"nameservers"`
}

type poolStats struct {
	Pool            string  `json:"pool"`
	Size            int     `json:"size"`
	ResolutionsPerS float64 `json:"resolutions_per_s"`
}

type renewal struct {
	Scope      string    `json:"scope"`
	Pool       string    `json:"pool"`
	PEID       string    `json:"pe_id"`
	UpdatedAt  time.Time `json:"updated_at"`
	LifetimeMS int64     `json:"lifetime_ms"`
}

// Bounds of the stream.
const (
	// clientQueue: messages a page may fall behind by before it is cut
	// off (its EventSource reconnects and starts over from a snapshot).
	clientQueue = 1024
	// writeTimeout bounds one write to a page.
	writeTimeout = 10 * time.Second
	// keepAlive: a comment line this often keeps idle streams open
	// through proxies.
	keepAlive = 15 * time.Second
	// recordWait bounds how long a change waits for this replica's view
	// to show its revision before it goes out without a record.
	recordWait = 250 * time.Millisecond
	// historyLen is how many stats a snapshot carries.
	historyLen = 120
)

// client is one open stream.
type client struct {
	msgs chan []byte
	cut  chan struct{} // closed when it fell behind
}

// scopeServer is a scope and the replica that shows it.
type scopeServer struct {
	scope string
	n     *server.NameServer
}

// scopeServers pairs each scope with the replica that serves it (the
// first attached one, if several do), sorted by scope.
func (m *Monitor) scopeServers() []scopeServer {
	var out []scopeServer
	for _, n := range m.attached() {
		for _, sc := range n.Scopes() {
			if !slices.ContainsFunc(out, func(s scopeServer) bool { return s.scope == sc }) {
				out = append(out, scopeServer{sc, n})
			}
		}
	}
	slices.SortFunc(out, func(a, b scopeServer) int { return strings.Compare(a.scope, b.scope) })
	return out
}

func (m *Monitor) replicaIDs() string {
	var ids []string
	for _, n := range m.attached() {
		if !slices.Contains(ids, n.ID()) {
			ids = append(ids, n.ID())
		}
	}
	return strings.Join(ids, ",")
}

// snapshot is the whole name space as the attached replicas hold it.
func (m *Monitor) snapshot() snapshotMsg {
	m.mu.Lock()
	history := slices.Clone(m.history)
	m.mu.Unlock()
	if history == nil {
		history = []statsMsg{}
	}
	msg := snapshotMsg{Time: time.Now().UTC(), Replica: m.replicaIDs(), Scopes: []scopeState{}, History: history}
	for _, s := range m.scopeServers() {
		st := scopeState{Scope: s.scope, Pools: []poolState{}}
		for _, sum := range s.n.PoolSummaries(s.scope) {
			sum, recs, ok := s.n.Pool(s.scope, sum.Pool)
			if !ok {
				continue // gone since the listing
			}
			st.Pools = append(st.Pools, poolState{Pool: sum.Pool, Policy: sum.Policy, Revision: sum.Revision, Elements: recs})
		}
		msg.Scopes = append(msg.Scopes, st)
	}
	return msg
}

// changed sends a change that n saw on its change subjects to every page,
// with the PE's full record (for its age and lifetime).
func (m *Monitor) changed(n *server.NameServer, ch events.Change) {
	if m.clientCount() == 0 {
		return // nobody watches: no record lookup, no encoding
	}
	m.mirror.sent(ch)
	msg := changeMsg{Time: time.Now().UTC(), Change: ch}
	if ch.Element != nil {
		msg.Policy = ch.Element.Policy.Name
	}
	if ch.Op != events.OpRemove {
		if rec, ok := n.Record(ch.Scope, ch.Pool, ch.PEID, ch.Revision, recordWait); ok {
			msg.Record = &rec
			msg.Policy = rec.Policy.Name
		}
	}
	m.broadcast("change", msg)
}

// broadcast sends one message to every page; a page that fell behind by
// clientQueue messages is cut off.
func (m *Monitor) broadcast(event string, v any) {
	frame := sseFrame(event, v)
	m.mu.Lock()
	defer m.mu.Unlock()
	for c := range m.clients {
		select {
		case c.msgs <- frame:
		default:
			delete(m.clients, c)
			close(c.cut)
		}
	}
}

func (m *Monitor) clientCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.clients)
}

func sseFrame(event string, v any) []byte {
	var b bytes.Buffer
	b.WriteString("event: ")
	b.WriteString(event)
	b.WriteString("\ndata: ")
	_ = json.NewEncoder(&b).Encode(v) // one line: the encoder escapes newlines in strings
	b.WriteString("\n")
	return b.Bytes()
}

// stream serves /api/stream: a snapshot, then every change and the stats.
func (m *Monitor) stream(w http.ResponseWriter, r *http.Request) {
	if m.attached() == nil {
		http.Error(w, "not ready: the name space is not loaded yet", http.StatusServiceUnavailable)
		return
	}
	c := &client{msgs: make(chan []byte, clientQueue), cut: make(chan struct{})}
	// Registered before the snapshot is taken: no change falls between.
	m.mu.Lock()
	m.clients[c] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.clients, c)
		m.mu.Unlock()
	}()

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write([]byte("retry: 1000\n\n")) || !write(sseFrame("snapshot", m.snapshot())) {
		return
	}
	ping := time.NewTicker(keepAlive)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-m.done:
			return
		case <-c.cut:
			m.log.Info("page fell behind: stream cut off (it reconnects)", "remote", r.RemoteAddr)
			return
		case b := <-c.msgs:
			if !write(b) {
				return
			}
		case <-ping.C:
			if !write([]byte(": keep-alive\n\n")) {
				return
			}
		}
	}
}

// statsLoop sends the stats every StatsInterval until Close.
func (m *Monitor) statsLoop() {
	t := time.NewTicker(m.cfg.StatsInterval)
	defer t.Stop()
	st := statsState{seen: map[string]*poolSeen{}}
	for {
		select {
		case <-m.done:
			return
		case now := <-t.C:
			watched := m.clientCount() > 0
			msg := st.next(m, now, watched)
			past := msg
			past.Renewed = []renewal{}
			m.mu.Lock()
			if len(m.history) == historyLen {
				m.history = slices.Delete(m.history, 0, 1)
			}
			m.history = append(m.history, past)
			m.mu.Unlock()
			if watched {
				m.broadcast("stats", msg)
			}
		}
	}
}

// statsState is what the renewals are found against: the PE update times
// of the last round.
type statsState struct {
	seen map[string]*poolSeen // scope/pool; kept only while pages watch
}

type poolSeen struct {
	rev     uint64
	updated map[string]time.Time // pe_id → updated_at
}

// next computes the stats of now: pool sizes from the view, resolutions
// per second from the beats of all replicas, and (when pages watch) the
// PEs renewed since the last round.
func (st *statsState) next(m *Monitor, now time.Time, renewals bool) statsMsg {
	msg := statsMsg{Time: now.UTC(), Scopes: []scopeStats{}, Renewed: []renewal{}}
	seen := map[string]*poolSeen{}
	for _, s := range m.scopeServers() {
		replicas, rates := m.nameServers.rates(s.scope, now)
		ss := scopeStats{Scope: s.scope, Pools: []poolStats{}, NameServers: replicas}
		for _, r := range replicas {
			ss.ResolutionsPerS += r.ResolutionsPerS
		}
		for _, p := range s.n.PoolSummaries(s.scope) {
			ss.Pools = append(ss.Pools, poolStats{Pool: p.Pool, Size: p.Size, ResolutionsPerS: rates[p.Pool]})
			if renewals {
				seen[s.scope+"/"+p.Pool] = st.renewed(&msg, s.n, s.scope, p)
			}
		}
		msg.Scopes = append(msg.Scopes, ss)
	}
	st.seen = seen
	return msg
}

// renewed adds the PEs of pool p whose record moved (a renewal) since the
// last round; a pool whose revision did not move is not read.
func (st *statsState) renewed(msg *statsMsg, n *server.NameServer, scope string, p server.PoolSummary) *poolSeen {
	key := scope + "/" + p.Pool
	old := st.seen[key]
	if old != nil && old.rev == p.Revision {
		return old
	}
	sum, recs, ok := n.Pool(scope, p.Pool)
	if !ok {
		return old
	}
	ps := &poolSeen{rev: sum.Revision, updated: make(map[string]time.Time, len(recs))}
	for _, rec := range recs {
		ps.updated[rec.PEID] = rec.UpdatedAt
		if old == nil {
			continue
		}
		if t, ok := old.updated[rec.PEID]; ok && !t.Equal(rec.UpdatedAt) {
			msg.Renewed = append(msg.Renewed, renewal{Scope: scope, Pool: p.Pool, PEID: rec.PEID, UpdatedAt: rec.UpdatedAt, LifetimeMS: rec.LifetimeMS})
		}
	}
	return ps
}
