package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
)

// Bounds of the replica's own checks of reported PEs.
const (
	// checkInterval: at most one check per PE per interval, per replica.
	checkInterval = time.Second
	// maxChecksRunning: checks in flight per replica; a report that
	// finds them all busy only counts.
	maxChecksRunning = 8
	// maxCheckedTransports: transports checked per PE (they are tried in
	// order until one passes).
	maxCheckedTransports = 4
	// maxCheckTimes bounds the per-PE times of the rate limit.
	maxCheckTimes = 16384
)

// failure takes a failure report: it counts the reporter (the signer) in
// the reports bucket, takes the PE out once MaxBadPEReports distinct
// reporters reported it within the window, and otherwise may check the PE
// itself. A returned error is a fault of the store (the report is
// delivered again; a reporter counts once however often it reports).
func (g *registrar) failure(ctx context.Context, msg *nats.Msg, poolName string, stored time.Time) error {
	var rep events.FailureReport
	reporter, err := g.verify(ctx, msg, &rep, stored)
	if err != nil {
		g.log.InfoContext(ctx, "failure report refused", "subject", msg.Subject, "reason", err)
		var rj *rejection
		if errors.As(err, &rj) {
			g.metrics.event(g.scope, events.KindFailure, &rj.e)
		}
		g.metrics.reports.WithLabelValues(g.scope, "refused").Inc()
		return nil
	}
	key := events.Key(poolName, rep.PEID)
	rec, ok := g.view.live(key)
	if !ok {
		g.log.DebugContext(ctx, "failure report about an unknown PE ignored", "reporter", reporter)
		g.metrics.event(g.scope, events.KindFailure, &events.Error{Code: events.CodeNotFound})
		g.metrics.reports.WithLabelValues(g.scope, "unknown_pe").Inc()
		return nil
	}
	n, err := g.addReport(ctx, key, reporter)
	if err != nil {
		return err
	}
	g.metrics.event(g.scope, events.KindFailure, nil)
	g.metrics.reports.WithLabelValues(g.scope, "counted").Inc()
	g.log.InfoContext(ctx, "failure report", "reporter", reporter, "reason", rep.Reason,
		"reporters", n, "max_bad_pe_reports", g.rs.MaxBadPEReports, "window", g.rs.Window)
	if n >= g.rs.MaxBadPEReports {
		ch, err := g.removeIf(ctx, key, events.ReasonFailed, func(*events.Record) bool { return true }, "reporters", n)
		if err != nil {
			return err
		}
		if ch != nil {
			g.clearReports(ctx, key)
		}
		return nil
	}
	if !g.noChecks {
		g.maybeCheck(ctx, key, rec)
	}
	return nil
}

// reportTTL is the per-key TTL of a reports key: the window in whole
// seconds (rounded up, at least 1 s; see nats-facts.md).
func reportTTL(window time.Duration) time.Duration {
	ttl := max(window.Truncate(time.Second), time.Second)
	if ttl < window {
		ttl += time.Second
	}
	return ttl
}

// addReport records reporter's report of key in the reports bucket with
// compare-and-set, dropping reports older than the window, and returns
// how many distinct reporters reported key within it. Every write renews
// the key's TTL (the window), so a key no one reports leaves the bucket.
func (g *registrar) addReport(ctx context.Context, key, reporter string) (int, error) {
	window := g.rs.Window
	return retryCAS(ctx, func() (int, error) {
		now := g.now().UTC()
		reps := events.Reports{}
		var rev uint64
		e, err := g.reports.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return 0, fmt.Errorf("read reports %s: %w", key, err)
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &reps); err != nil || reps == nil {
				g.log.Warn("reports of a PE are corrupt: starting afresh", "key", key, "err", err)
				reps = events.Reports{}
			}
		}
		for r, t := range reps {
			if now.Sub(t) >= window {
				delete(reps, r)
			}
		}
		reps[reporter] = now
		val := events.Marshal(reps)
		if rev == 0 {
			_, err = g.reports.Create(ctx, key, val, jetstream.KeyTTL(reportTTL(window)))
		} else {
			_, err = writeKV(ctx, g.js, g.reports.Bucket(), key, val, rev, reportTTL(window), false, nil)
		}
		if err != nil {
			return 0, err
		}
		return len(reps), nil
	})
}

// clearReports forgets the reports of a PE that was taken out, so that it
// starts afresh if it registers again.
func (g *registrar) clearReports(ctx context.Context, key string) {
	if err := g.reports.Purge(ctx, key, jetstream.PurgeTTL(time.Second)); err != nil {
		g.log.Debug("reports not cleared: they expire with the window", "key", key, "err", err)
	}
}

// maybeCheck checks a reported PE in the background, at most once per
// checkInterval per PE and with at most maxChecksRunning checks in
// flight, and takes it out at once when the check fails. Its log lines
// name the report of ctx.
func (g *registrar) maybeCheck(ctx context.Context, key string, rec events.Record) {
	report := logAttrsOf(ctx)
	if !slices.ContainsFunc(rec.Transports, func(t events.Transport) bool { return checkable(g.scope, rec.Pool, t) }) {
		return
	}
	now := time.Now()
	g.checkMu.Lock()
	if last, ok := g.checked[key]; ok && now.Sub(last) < checkInterval {
		g.checkMu.Unlock()
		g.log.DebugContext(ctx, "reported PE checked less than a second ago: the report only counts")
		return
	}
	if len(g.checked) >= maxCheckTimes {
		deleteOlder(g.checked, now.Add(-checkInterval))
		if len(g.checked) >= maxCheckTimes {
			clear(g.checked)
		}
	}
	g.checked[key] = now
	g.checkMu.Unlock()

	started := g.checks.start(func(ctx context.Context) {
		ctx = withLogAttrs(ctx, report...)
		res, detail := g.checks.check(ctx, g.scope, rec)
		switch res {
		case checkPassed:
			g.log.InfoContext(ctx, "reported PE passed the check: the report only counts", "check", detail)
			return
		case checkNone:
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		// Only the very registration checked: not one that came since
		// with other transports.
		same := func(cur *events.Record) bool {
			return cur.Signer == rec.Signer && cur.RegisteredAt.Equal(rec.RegisteredAt) && slices.Equal(cur.Transports, rec.Transports)
		}
		ch, err := g.removeIf(rctx, key, events.ReasonFailed, same, "check", detail)
		if err != nil {
			g.log.WarnContext(ctx, "PE that failed its check not removed", "err", err)
			return
		}
		if ch != nil {
			g.clearReports(rctx, key)
		}
	})
	if !started {
		g.log.DebugContext(ctx, "too many checks running: the report only counts")
	}
}

// deleteOlder deletes the times before cutoff.
func deleteOlder(m map[string]time.Time, cutoff time.Time) {
	for k, t := range m {
		if t.Before(cutoff) {
			delete(m, k)
		}
	}
}

// checkable tells whether the replica checks transport t of a PE of pool:
// tcp transports (a TCP connect), and nats transports on the PE service
// subjects of the pool (rsp.<scope>.svc.<pool>.>). The replica may
// publish anywhere in its account, so it never sends a request to any
// other subject a PE names: a PE could name a JetStream API subject.
func checkable(scope, pool string, t events.Transport) bool {
	switch t.Proto {
	case "tcp":
		return true
	case "nats":
		rest, ok := strings.CutPrefix(t.Subject, strings.TrimSuffix(events.ServiceSubjects(scope, pool), ">"))
		return ok && rest != "" && !strings.ContainsAny(t.Subject, "*> \t\r\n") && !strings.Contains(t.Subject, "..") && !strings.HasSuffix(t.Subject, ".")
	}
	return false
}

type checkResult int

const (
	checkNone   checkResult = iota // nothing could be checked
	checkPassed                    // a transport answered
	checkFailed                    // every transport checked failed
)

// checker runs the checks of reported PEs in the background, bounded.
type checker struct {
	nc      *nats.Conn
	timeout time.Duration
	log     *slog.Logger
	sem     chan struct{}
	ctx     context.Context
	cancel  context.CancelFunc

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func newChecker(nc *nats.Conn, timeout time.Duration, log *slog.Logger) *checker {
	ctx, cancel := context.WithCancel(context.Background())
	return &checker{nc: nc, timeout: timeout, log: log, sem: make(chan struct{}, maxChecksRunning), ctx: ctx, cancel: cancel}
}

// start runs f in the background unless maxChecksRunning checks are in
// flight or the checker is closed.
func (c *checker) start(f func(context.Context)) bool {
	select {
	case c.sem <- struct{}{}:
	default:
		return false
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.sem
		return false
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		defer func() { <-c.sem }()
		f(c.ctx)
	}()
	return true
}

// close stops the checks in flight and waits for them.
func (c *checker) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

// errInconclusive marks a check that says nothing about the PE (the
// replica is stopping, or lost its own connection).
var errInconclusive = errors.New("inconclusive")

// check tries the checkable transports of rec in order until one passes.
func (c *checker) check(ctx context.Context, scope string, rec events.Record) (checkResult, string) {
	var failures []string
	for _, t := range rec.Transports {
		if len(failures) == maxCheckedTransports || !checkable(scope, rec.Pool, t) {
			continue
		}
		var err error
		where := t.Proto + " " + t.Addr + t.Subject
		if t.Proto == "nats" {
			err = c.request(ctx, t.Subject)
		} else {
			err = c.dial(ctx, t.Addr)
		}
		switch {
		case err == nil:
			return checkPassed, where + " answered"
		case errors.Is(err, errInconclusive):
			c.log.Debug("check inconclusive", "pe_id", rec.PEID, "transport", where, "err", err)
		default:
			failures = append(failures, where+": "+err.Error())
		}
	}
	if len(failures) == 0 {
		return checkNone, ""
	}
	return checkFailed, strings.Join(failures, "; ")
}

// request sends an empty request marked Rsp-Check to subject: no
// responders or no answer within the timeout is a failure.
func (c *checker) request(ctx context.Context, subject string) error {
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	m := nats.NewMsg(subject)
	m.Header.Set(events.HeaderCheck, "1")
	_, err := c.nc.RequestMsgWithContext(rctx, m)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, nats.ErrNoResponders):
		return errors.New("no responders")
	case ctx.Err() != nil:
		return fmt.Errorf("%w: %v", errInconclusive, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("no answer within %s", c.timeout)
	}
	return fmt.Errorf("%w: %v", errInconclusive, err)
}

// dial tries a TCP connect to addr and closes it at once.
func (c *checker) dial(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: c.timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %v", errInconclusive, err)
		}
		return err
	}
	_ = conn.Close()
	return nil
}
