package rspclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/rserpool/rsp/events"
)

// Headers of requests and replies on a PE's "nats" transport: the wire
// names live in events.
const (
	HeaderSession = events.HeaderSession
	HeaderCookie  = events.HeaderCookie
	HeaderError   = events.HeaderError
)

// Transport protocols a session uses.
const (
	ProtoNATS = "nats"
	ProtoTCP  = "tcp"
)

// DefaultAttemptTimeout bounds each attempt of a session at one PE (a
// request's reply, a TCP connect) unless WithAttemptTimeout says otherwise.
const DefaultAttemptTimeout = time.Second

var (
	// ErrNoPE is wrapped by the error of a session request when no PE of
	// the pool could be tried: the pool is empty, every member failed, or
	// none has the transport needed.
	ErrNoPE = errors.New("rspclient: no usable pool element")
	// ErrSessionClosed is returned by a closed session.
	ErrSessionClosed = errors.New("rspclient: session closed")
)

// ServiceError is a PE's answer that its handler failed the request (reply
// header Rsp-Error). The PE is working, so the session does not fail over.
type ServiceError struct {
	PEID    string
	Message string
}

func (e *ServiceError) Error() string { return "pool element " + e.PEID + ": " + e.Message }

// SessionOption configures a Session.
type SessionOption func(*sessionOptions) error

type sessionOptions struct {
	cache    *PoolCache
	hint     map[string]string
	affinity string
	attempt  time.Duration
	timeout  time.Duration
	dialer   func(context.Context, events.Element) (net.Conn, error)
}

// WithPoolCache makes the session select from pc, a cache of the same pool
// shared with other sessions, instead of a cache of its own. Closing the
// session leaves pc open.
func WithPoolCache(pc *PoolCache) SessionOption {
	return func(o *sessionOptions) error {
		if pc == nil {
			return events.Errf("cache", "is nil")
		}
		o.cache = pc
		return nil
	}
}

// WithHint passes hints to the pool policy when the session selects a PE
// (PoolCache.Pick), such as {"zone": "a"}.
func WithHint(hint map[string]string) SessionOption {
	return func(o *sessionOptions) error {
		o.hint = maps.Clone(hint)
		return nil
	}
}

// WithAffinity makes the session start with PE peID, if it is in the pool,
// instead of the policy's choice: a client comes back to the PE it used
// before through its PE handle.
func WithAffinity(peID string) SessionOption {
	return func(o *sessionOptions) error {
		if err := events.CheckPEID(peID); err != nil {
			return err
		}
		o.affinity = peID
		return nil
	}
}

// WithAttemptTimeout bounds each attempt at one PE (default
// DefaultAttemptTimeout): a PE that does not reply (or accept a TCP
// connection) in time counts as failed. Make it longer than the slowest
// answer a working PE gives.
func WithAttemptTimeout(d time.Duration) SessionOption {
	return func(o *sessionOptions) error {
		if d <= 0 {
			return events.Errf("attempt_timeout", "%s must be > 0", d)
		}
		o.attempt = d
		return nil
	}
}

// WithSessionTimeout bounds each Request and Dial, failovers included
// (default: the client's timeout); the ctx given to them may bound them
// sooner.
func WithSessionTimeout(d time.Duration) SessionOption {
	return func(o *sessionOptions) error {
		if d <= 0 {
			return events.Errf("session_timeout", "%s must be > 0", d)
		}
		o.timeout = d
		return nil
	}
}

// WithDialer replaces how Dial connects to a PE's "tcp" transport (default:
// a TCP connect to its first tcp address), for TLS or a proxy. dial gets
// the PE and a ctx bounded by the attempt timeout; an error counts as the
// PE's failure.
func WithDialer(dial func(ctx context.Context, pe events.Element) (net.Conn, error)) SessionOption {
	return func(o *sessionOptions) error {
		if dial == nil {
			return events.Errf("dialer", "is nil")
		}
		o.dialer = dial
		return nil
	}
}

// Session is an RFC 5352 ASAP session, in spirit: a PU's conversation with
// a pool, served by one PE at a time. It selects a PE from a PoolCache (no
// name-server round trip per request), stays with it while it answers —
// even after it deregistered, as a draining PE keeps serving its sessions
// — and on a failure (no reply within the attempt timeout, no responders,
// a refused connection) reports the PE (PoolCache.ReportFailure: dropped
// from the cache at once, a signed failure report sent in the background),
// fails over to the next PE the policy picks and tries again, with
// exponential backoff and jitter, until the session timeout. The state
// cookie of the last reply goes with every request, so the PE taken over
// can restore the session's state.
//
// A Session is safe for concurrent use. Make it with Client.NewSession.
type Session struct {
	c     *Client
	pool  string
	id    string
	cache *PoolCache
	own   bool // the cache is the session's: Close closes it
	o     sessionOptions
	log   *slog.Logger

	mu       sync.Mutex
	pe       *events.Element // the PE in use; nil: pick one
	affinity string          // the PE to start with, until used
	cookie   string
	closed   bool

	reports     sync.WaitGroup
	repCtx      context.Context
	repCancel   context.CancelFunc
	cacheCancel context.CancelFunc // ends the session's own cache
}

// Reply is a PE's answer to a session request.
type Reply struct {
	// Data is the reply's body.
	Data []byte
	// PEID is the PE that answered.
	PEID string
	// Cookie is the session's state cookie after this reply: the one the
	// PE set, or the previous one when it set none.
	Cookie string
	// Header holds the reply's headers.
	Header nats.Header
}

// NewSession starts a session with pool. Unless WithPoolCache gives one,
// the session fills a PoolCache of its own (Client.Cache, bounded by the
// client's timeout and ctx), which lives until Close.
func (c *Client) NewSession(ctx context.Context, pool string, opts ...SessionOption) (*Session, error) {
	if err := events.CheckPool(pool); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	o := sessionOptions{attempt: DefaultAttemptTimeout, timeout: c.timeout}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("session: %w", err)
		}
	}
	s := &Session{c: c, pool: pool, id: nuid.Next(), o: o, affinity: o.affinity, cache: o.cache}
	if s.cache == nil {
		// The cache outlives ctx, which bounds only filling it.
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stop := context.AfterFunc(ctx, cancel)
		pc, err := c.Cache(cctx, pool)
		if !stop() || err != nil {
			cancel()
			if err == nil {
				pc.Close()
				err = ctx.Err()
			}
			return nil, fmt.Errorf("session: %w", err)
		}
		s.cache, s.own, s.cacheCancel = pc, true, cancel
	} else if s.cache.Pool() != pool {
		return nil, fmt.Errorf("session: %w", events.Errf("cache", "caches pool %s, not %s", s.cache.Pool(), pool))
	}
	s.log = c.log.With("pool", pool, "session", s.id)
	s.repCtx, s.repCancel = context.WithCancel(context.Background())
	return s, nil
}

// ID is the session id, sent in the header Rsp-Session of every request.
func (s *Session) ID() string { return s.id }

// Pool is the session's pool handle.
func (s *Session) Pool() string { return s.pool }

// PE is the id of the PE the session uses now, "" before the first
// selection and after a failure.
func (s *Session) PE() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pe == nil {
		return ""
	}
	return s.pe.PEID
}

// Cookie is the latest state cookie a PE set, "" if none.
func (s *Session) Cookie() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cookie
}

// Cache is the PoolCache the session selects from.
func (s *Session) Cache() *PoolCache { return s.cache }

// Close ends the session: it waits for the failure reports still being
// sent (each bounded by the client's timeout) and closes the session's own
// cache. Requests after Close fail with ErrSessionClosed.
func (s *Session) Close() {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		return
	}
	s.reports.Wait()
	s.repCancel()
	if s.own {
		s.cache.Close()
		s.cacheCancel()
	}
}

// Request sends data to the session's PE on its "nats" transport and
// returns the reply, failing over to other PEs as the Session doc says,
// until the session timeout or ctx ends. The request carries the headers
// Rsp-Session and, once a PE set one, Rsp-Cookie. An error is a
// *ServiceError when the PE's handler failed the request, and otherwise
// says why no PE answered (wrapping ErrNoPE when none could be tried).
func (s *Session) Request(ctx context.Context, data []byte) (*Reply, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.timeout)
	defer cancel()
	var reply *Reply
	err := s.failover(ctx, ProtoNATS, func(ctx context.Context, pe events.Element, t events.Transport) error {
		var err error
		reply, err = s.request(ctx, pe, t.Subject, data)
		return err
	}, s.classifyRequest)
	if err != nil {
		return nil, fmt.Errorf("session %s: request to pool %s: %w", s.id, s.pool, err)
	}
	return reply, nil
}

// Dial connects to the session's PE on its "tcp" transport (or with the
// WithDialer function) and returns the connection and the PE. A PE that
// refuses the connection or does not accept it within the attempt timeout
// is reported, and the session fails over as Request does. The connection
// is the caller's; the session stays with this PE.
func (s *Session) Dial(ctx context.Context) (net.Conn, events.Element, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.timeout)
	defer cancel()
	var (
		conn net.Conn
		got  events.Element
	)
	err := s.failover(ctx, ProtoTCP, func(ctx context.Context, pe events.Element, t events.Transport) error {
		var err error
		if s.o.dialer != nil {
			conn, err = s.o.dialer(ctx, pe)
		} else {
			var d net.Dialer
			conn, err = d.DialContext(ctx, "tcp", t.Addr)
		}
		if err == nil {
			got = pe
		}
		return err
	}, func(error) outcome { return peFailed })
	if err != nil {
		return nil, events.Element{}, fmt.Errorf("session %s: dial pool %s: %w", s.id, s.pool, err)
	}
	return conn, got, nil
}

// outcome is what a failed attempt means for the session.
type outcome int

const (
	giveUp   outcome = iota // an error failing over cannot fix: return it
	peFailed                // the PE failed: report it, fail over
	tryAgain                // not the PE's fault (our connection is down): try again
)

// classifyRequest tells what a request's error means: no responders
// (nobody serves the PE's subject) or no reply within the attempt timeout
// while our connection is up are the PE's failure; a timeout or a full
// reconnect buffer while our connection is down is not; anything else (a
// closed connection, a payload too large, a *ServiceError) ends the call.
func (s *Session) classifyRequest(err error) outcome {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return peFailed
	case errors.Is(err, nats.ErrReconnectBufExceeded):
		return tryAgain
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		if s.c.nc.Status() != nats.CONNECTED {
			return tryAgain
		}
		return peFailed
	}
	return giveUp
}

// failover runs attempt at the session's PE, or at the next one the policy
// picks, until one succeeds, an attempt fails for a reason failing over
// cannot fix, or ctx ends; each attempt is bounded by the attempt timeout,
// and it waits with exponential backoff and jitter between attempts.
func (s *Session) failover(ctx context.Context, proto string,
	attempt func(context.Context, events.Element, events.Transport) error, classify func(error) outcome) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(10*time.Millisecond),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMultiplier(2),
		backoff.WithMaxInterval(time.Second),
		backoff.WithMaxElapsedTime(0), // ctx bounds it
	)
	var last error
	for {
		pe, t, err := s.target(proto)
		if errors.Is(err, ErrSessionClosed) {
			return err
		}
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, s.o.attempt)
			err = attempt(actx, pe, t)
			cancel()
			if err == nil {
				return nil
			}
			if ctx.Err() != nil { // the whole call ran out: the PE may be fine
				return fmt.Errorf("%w (last attempt, at %s: %v)", ctx.Err(), pe.PEID, err)
			}
			switch classify(err) {
			case giveUp:
				return err
			case tryAgain:
				err = fmt.Errorf("at %s: %w (NATS connection %s)", pe.PEID, err, s.c.nc.Status())
			case peFailed:
				s.failed(pe, err)
				err = fmt.Errorf("at %s: %w", pe.PEID, err)
			}
		}
		last = err
		d := b.NextBackOff()
		s.log.Debug("retrying", "err", err, "in", d)
		wait := time.NewTimer(d)
		select {
		case <-ctx.Done():
			wait.Stop()
			return fmt.Errorf("%w (last attempt: %w)", ctx.Err(), last)
		case <-wait.C:
		}
	}
}

// target is the PE to try and its transport of proto: the session's PE,
// or else (or when it lacks proto) the best pick of the cache that has
// proto, which becomes the session's PE.
func (s *Session) target(proto string) (events.Element, events.Transport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return events.Element{}, events.Transport{}, ErrSessionClosed
	}
	if s.pe != nil {
		if t, ok := transportOf(*s.pe, proto); ok {
			return *s.pe, t, nil
		}
	}
	if s.affinity != "" {
		id := s.affinity
		s.affinity = ""
		for _, el := range s.cache.Members() {
			if t, ok := transportOf(el, proto); ok && el.PEID == id {
				s.pe = &el
				return el, t, nil
			}
		}
	}
	n := s.cache.Len()
	if n == 0 {
		return events.Element{}, events.Transport{}, fmt.Errorf("%w: pool %s has no member left to try", ErrNoPE, s.pool)
	}
	for _, el := range s.cache.Pick(n, s.o.hint) {
		if t, ok := transportOf(el, proto); ok {
			s.pe = &el
			s.log.Debug("selected", "pe_id", el.PEID)
			return el, t, nil
		}
	}
	return events.Element{}, events.Transport{}, fmt.Errorf("%w: no member of pool %s left to try has a %s transport", ErrNoPE, s.pool, proto)
}

func transportOf(el events.Element, proto string) (events.Transport, bool) {
	for _, t := range el.Transports {
		if t.Proto == proto && (t.Addr != "" || t.Subject != "") {
			return t, true
		}
	}
	return events.Transport{}, false
}

// request sends one request to a PE's subject and takes its reply.
func (s *Session) request(ctx context.Context, pe events.Element, subject string, data []byte) (*Reply, error) {
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(HeaderSession, s.id)
	if cookie := s.Cookie(); cookie != "" {
		msg.Header.Set(HeaderCookie, cookie)
	}
	m, err := s.c.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return nil, err
	}
	if reason := m.Header.Get(HeaderError); reason != "" {
		return nil, &ServiceError{PEID: pe.PEID, Message: reason}
	}
	s.mu.Lock()
	if vals, ok := m.Header[HeaderCookie]; ok && len(vals) > 0 {
		s.cookie = vals[0]
	}
	cookie := s.cookie
	s.mu.Unlock()
	return &Reply{Data: m.Data, PEID: pe.PEID, Cookie: cookie, Header: m.Header}, nil
}

// failed forgets pe as the session's PE and, if it is still a member of
// the cache, drops it there at once and reports it in the background.
func (s *Session) failed(pe events.Element, cause error) {
	reason := cause.Error()
	if errors.Is(cause, nats.ErrNoResponders) {
		reason = "no responders"
	} else if errors.Is(cause, context.DeadlineExceeded) {
		reason = fmt.Sprintf("no answer within %s", s.o.attempt)
	}
	if !s.cache.drop(pe.PEID) {
		// No longer a member (it deregistered, or was reported already):
		// nothing to report.
		s.mu.Lock()
		if s.pe != nil && s.pe.PEID == pe.PEID {
			s.pe = nil
		}
		s.mu.Unlock()
		s.log.Info("pool element failed, failing over", "pe_id", pe.PEID, "reason", reason)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pe != nil && s.pe.PEID == pe.PEID {
		s.pe = nil
	}
	if s.closed { // Close is waiting for the reports: add none
		return
	}
	s.log.Info("pool element failed, reporting it and failing over", "pe_id", pe.PEID, "reason", reason)
	s.reports.Add(1)
	go func() {
		defer s.reports.Done()
		if err := s.c.ReportFailure(s.repCtx, s.pool, pe.PEID, reason); err != nil {
			s.log.Warn("failure report not sent", "pe_id", pe.PEID, "err", err)
		}
	}()
}

// drop marks PE peID failed in the cache, as ReportFailure does without
// sending the report, and tells whether it was a member not marked yet.
func (pc *PoolCache) drop(peID string) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	i, ok := pc.find(peID)
	if !ok || pc.members[i].failed {
		return false
	}
	pc.members[i].failed = true
	pc.publish()
	return true
}
