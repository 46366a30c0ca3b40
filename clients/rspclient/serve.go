package rspclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/rserpool/rsp/events"
)

// Defaults of Serve.
const (
	// DefaultWorkers is how many requests a Server handles at once unless
	// WithWorkers says otherwise.
	DefaultWorkers = 64
	// DefaultIdle is how long a draining Server waits for a request before
	// it stops, unless WithIdle says otherwise.
	DefaultIdle = time.Second
)

// Request is one request a Server received from a session.
type Request struct {
	// Data is the request's body.
	Data []byte
	// Cookie is the session's latest state cookie (header Rsp-Cookie), ""
	// if none: set by this PE, or by another one before a failover.
	Cookie string
	// SessionID is the session's id (header Rsp-Session), "" for a client
	// that sent none.
	SessionID string
	// Header holds every header of the request; do not modify it.
	Header nats.Header
}

// Response is a handler's answer.
type Response struct {
	// Data is the reply's body.
	Data []byte
	// Cookie, when not empty, becomes the session's state cookie (reply
	// header Rsp-Cookie): the session presents it on every later request,
	// to this PE or to the one it fails over to. It is text: no CR or LF
	// (encode binary state, e.g. base64). Empty leaves the session's
	// cookie as it was.
	Cookie string
}

// Handler serves one request. An error is sent back as the reply header
// Rsp-Error (the session returns a *ServiceError and does not fail over);
// a nil Response is an empty reply. ctx ends when the Server is closed.
type Handler func(ctx context.Context, req *Request) (*Response, error)

// ServeOption configures a Server.
type ServeOption func(*serveOptions) error

type serveOptions struct {
	workers int
	idle    time.Duration
}

// WithWorkers bounds how many requests the Server handles at once (default
// DefaultWorkers); more wait for a worker, and beyond 8 per worker in the
// subscription's queue.
func WithWorkers(n int) ServeOption {
	return func(o *serveOptions) error {
		if n < 1 {
			return events.Errf("workers", "%d must be ≥ 1", n)
		}
		o.workers = n
		return nil
	}
}

// WithIdle sets how long a draining Server waits without a request before
// it stops serving (default DefaultIdle).
func WithIdle(d time.Duration) ServeOption {
	return func(o *serveOptions) error {
		if d <= 0 {
			return events.Errf("idle", "%s must be > 0", d)
		}
		o.idle = d
		return nil
	}
}

// Server is a PE serving requests of sessions on its "nats" transport,
// the subject events.ServiceSubject(scope, pool, pe_id), and registered in
// its pool (renewed as Register does). Make it with Client.Serve.
type Server struct {
	c       *Client
	pool    string
	subject string
	h       Handler
	o       serveOptions
	reg     *Registration
	sub     *nats.Subscription
	log     *slog.Logger

	admit    chan struct{} // one slot per request waiting for a worker or running
	sem      chan struct{} // one slot per running handler
	inflight atomic.Int64
	last     atomic.Int64 // when the last request arrived, Unix ns

	ctx    context.Context // handlers' ctx, ended by Close
	cancel context.CancelFunc

	mu       sync.Mutex
	stopped  bool           // takes no more requests
	handlers sync.WaitGroup // Add only under mu while !stopped
	stopOnce sync.Once
	done     chan struct{}
}

// Serve makes pe a PE of pool served by handler: it subscribes to the PE's
// service subject events.ServiceSubject(scope, pool, pe.ID) (no queue
// group: each PE has its own), adds it as a "nats" transport to
// pe.Transports (the only one is fine), and registers pe (Register: ctx
// bounds the registration only). Requests are handled concurrently, at
// most WithWorkers at a time. Stop it with Drain (deregister, keep
// serving the sessions that stay, then stop) or Close.
func (c *Client) Serve(ctx context.Context, pool string, pe PE, handler Handler, opts ...ServeOption) (*Server, error) {
	if err := events.CheckPool(pool); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if handler == nil {
		return nil, fmt.Errorf("serve: %w", events.Errf("handler", "is nil"))
	}
	o := serveOptions{workers: DefaultWorkers, idle: DefaultIdle}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("serve: %w", err)
		}
	}
	if pe.ID == "" {
		pe.ID = nuid.Next()
	}
	if err := events.CheckPEID(pe.ID); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	subject := events.ServiceSubject(c.scope, pool, pe.ID)
	t := events.Transport{Proto: ProtoNATS, Subject: subject}
	if !slices.Contains(pe.Transports, t) {
		pe.Transports = append(slices.Clone(pe.Transports), t)
	}
	if err := pe.Validate(); err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	hctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		c: c, pool: pool, subject: subject, h: handler, o: o,
		log:   c.log.With("pool", pool, "pe_id", pe.ID),
		admit: make(chan struct{}, queuePerWorker*o.workers), sem: make(chan struct{}, o.workers),
		ctx: hctx, cancel: cancel, done: make(chan struct{}),
	}
	sub, err := c.nc.Subscribe(subject, s.dispatch)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("serve %s/%s: subscribe to %s: %w", pool, pe.ID, subject, err)
	}
	s.sub = sub
	// The subscription is in place on the server before anyone can
	// resolve the PE.
	fctx, fcancel := c.wait(ctx)
	err = c.nc.FlushWithContext(fctx)
	fcancel()
	if err == nil {
		s.reg, err = c.Register(ctx, pool, pe)
	}
	if err != nil {
		_ = sub.Unsubscribe()
		cancel()
		return nil, fmt.Errorf("serve %s/%s: %w", pool, pe.ID, err)
	}
	s.log.Debug("serving", "subject", subject, "workers", o.workers)
	return s, nil
}

// ID is the PE id.
func (s *Server) ID() string { return s.reg.ID() }

// Pool is the pool handle.
func (s *Server) Pool() string { return s.pool }

// Subject is the PE's service subject, where it takes requests.
func (s *Server) Subject() string { return s.subject }

// Registration is the PE's registration: its State and StateChanged tell
// how its renewals go, its Done and Err when it ends otherwise than by
// Drain or Close (a renewal refused for good), while the Server goes on
// serving.
func (s *Server) Registration() *Registration { return s.reg }

// Done is closed once the Server stopped serving (Drain or Close).
func (s *Server) Done() <-chan struct{} { return s.done }

// queuePerWorker bounds the requests waiting for a worker: dispatch
// blocks the subscription (and NATS queues what comes next) only once
// this many per worker are waiting, so a name server's check, answered
// by dispatch itself, is not stuck behind a few slow requests.
const queuePerWorker = 8

// dispatch runs on the subscription's goroutine: it answers checks and
// hands each request to a goroutine that waits for one of the
// WithWorkers workers.
func (s *Server) dispatch(m *nats.Msg) {
	if m.Reply == "" {
		s.log.Debug("ignoring a message without reply subject")
		return
	}
	if !strings.HasPrefix(m.Reply, "_INBOX.") {
		// A PE replies only to inboxes: a requester that names another
		// subject (a name server's $JS.ACK... delivery, say) would make
		// the PE's reply permission publish there for it.
		s.log.Warn("ignoring a request whose reply subject is not an inbox", "reply", m.Reply)
		return
	}
	if m.Header.Get(events.HeaderCheck) != "" {
		// A name server checks a reported PE: answer at once, without
		// the handler, and do not count it as a session's request.
		if err := m.Respond(nil); err != nil {
			s.log.Warn("check not answered", "err", err)
		}
		return
	}
	s.last.Store(time.Now().UnixNano())
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.handlers.Add(1)
	s.inflight.Add(1)
	s.mu.Unlock()
	s.admit <- struct{}{}
	go func() {
		defer func() {
			<-s.admit
			s.inflight.Add(-1)
			s.handlers.Done()
		}()
		s.sem <- struct{}{}
		defer func() { <-s.sem }()
		s.handle(m)
	}()
}

func (s *Server) handle(m *nats.Msg) {
	req := &Request{
		Data: m.Data, Header: m.Header,
		Cookie: m.Header.Get(HeaderCookie), SessionID: m.Header.Get(HeaderSession),
	}
	resp, err := s.call(req)
	out := nats.NewMsg(m.Reply)
	switch {
	case err != nil:
		out.Header.Set(HeaderError, oneLine(err.Error()))
	case resp != nil && strings.ContainsAny(resp.Cookie, "\r\n"):
		s.log.Error("handler set a cookie with CR or LF", "session", req.SessionID)
		out.Header.Set(HeaderError, "bad cookie: CR or LF")
	case resp != nil:
		out.Data = resp.Data
		if resp.Cookie != "" {
			out.Header.Set(HeaderCookie, resp.Cookie)
		}
	}
	if err := s.c.nc.PublishMsg(out); err != nil {
		s.log.Warn("reply not sent", "session", req.SessionID, "err", err)
	}
}

// call runs the handler, turning a panic into an error.
func (s *Server) call(req *Request) (resp *Response, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("handler panicked", "session", req.SessionID, "panic", p)
			resp, err = nil, errors.New("internal error")
		}
	}()
	return s.h(s.ctx, req)
}

func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}

// Drain takes the PE out of service without breaking its sessions: it
// deregisters at once (so no new session selects it), keeps serving the
// requests that still come (from sessions that stay with it) until none
// arrived for the idle period (WithIdle) or timeout passed since Drain
// began, then stops taking requests, lets the running ones finish (within
// ctx) and returns. Sessions that come later fail over to another PE with
// their cookie. ctx bounds the deregistration and the whole drain; an
// error says what went wrong, but the Server is stopped anyway.
func (s *Server) Drain(ctx context.Context, timeout time.Duration) error {
	start := time.Now()
	deadline := start.Add(timeout)
	var errs []error
	if err := s.reg.Deregister(ctx); err != nil {
		errs = append(errs, err)
	}
	s.log.Debug("draining", "timeout", timeout, "idle", s.o.idle)
	for {
		now := time.Now()
		idleSince := start
		if last := time.Unix(0, s.last.Load()); last.After(idleSince) {
			idleSince = last
		}
		quiet := idleSince.Add(s.o.idle)
		if !now.Before(quiet) && s.inflight.Load() == 0 {
			s.log.Debug("drained: idle", "for", now.Sub(idleSince))
			break
		}
		if !now.Before(deadline) {
			s.log.Info("drain timeout: stopping with sessions still active", "timeout", timeout)
			break
		}
		wake := quiet
		if deadline.Before(wake) {
			wake = deadline
		}
		if !now.Before(wake) { // idle for long enough, but requests still run
			wake = now.Add(min(s.o.idle, 10*time.Millisecond))
		}
		t := time.NewTimer(wake.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			errs = append(errs, fmt.Errorf("drain: %w", ctx.Err()))
			return errors.Join(append(errs, s.stop(ctx, false))...)
		case <-t.C:
		}
	}
	return errors.Join(append(errs, s.stop(ctx, true))...)
}

// Close stops at once: it deregisters (within ctx), stops taking
// requests, ends the handlers' ctx and waits for them within ctx.
func (s *Server) Close(ctx context.Context) error {
	err := s.reg.Deregister(ctx)
	return errors.Join(err, s.stop(ctx, false))
}

// stop stops taking requests and waits for the running handlers within
// ctx. graceful first drains the subscription, so requests the connection
// already received are answered too; otherwise the handlers' ctx ends.
func (s *Server) stop(ctx context.Context, graceful bool) error {
	var err error
	s.stopOnce.Do(func() {
		defer close(s.done)
		if graceful {
			err = s.drainSub(ctx)
		}
		if err != nil || !graceful {
			if uerr := s.sub.Unsubscribe(); uerr != nil && !errors.Is(uerr, nats.ErrBadSubscription) && !errors.Is(uerr, nats.ErrConnectionClosed) {
				err = errors.Join(err, uerr)
			}
			s.cancel()
		}
		s.mu.Lock()
		s.stopped = true
		s.mu.Unlock()
		waited := make(chan struct{})
		go func() {
			s.handlers.Wait()
			close(waited)
		}()
		select {
		case <-waited:
		case <-ctx.Done():
			s.cancel()
			err = errors.Join(err, fmt.Errorf("handlers still running: %w", ctx.Err()))
		}
		s.cancel()
	})
	return err
}

// drainSub drains the subscription (no new requests; those received are
// handed out) and waits, within ctx, until it is closed.
func (s *Server) drainSub(ctx context.Context) error {
	if err := s.sub.Drain(); err != nil {
		return err
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.sub.IsValid() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain subscription: %w", ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}
