package rspclient

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/policy"
)

// PE describes a pool element to register.
type PE struct {
	// ID is the PE id, unique in its pool; a random valid id when empty.
	ID string
	// Transports lists the ways to reach the PE (1 to events.MaxTransports).
	Transports []events.Transport
	// Policy names the pool policy and holds this PE's parameters for it;
	// Name defaults to policy.Default.
	Policy events.PolicyParams
	// Meta is free-form data that resolutions and changes carry.
	Meta map[string]string
	// Lifetime is how long the registration lasts without renewal
	// (default events.DefaultLifetime); the name space keeps it in whole
	// seconds, rounded up.
	Lifetime time.Duration
}

var (
	// ErrDeregistered is a Registration's Err after Deregister.
	ErrDeregistered = errors.New("rspclient: deregistered")
	// ErrLost is wrapped by the Err of a Lost StateChange: renewals
	// failed until the registration's lifetime ran out. It is a state, not
	// an end: the Registration goes on registering again.
	ErrLost = errors.New("rspclient: registration lost")
)

// Registration is a registered PE. It renews itself at about a third of its
// lifetime, and at once when its NATS connection reconnected (each
// registration names the connection it is sent over, its Conn). A renewal
// that fails for a reason retrying can mend is tried again, with
// exponential backoff and jitter, for as long as it takes, through
// outages of any length: State and StateChanged tell how it stands
// (Registered, Retrying, Lost). It ends only on Deregister, or when a name
// server refuses a renewal for a reason retrying cannot change (IsPermanent)
// or the client's NATS connection is closed; then Done is closed and Err
// says why.
type Registration struct {
	c        *Client
	pool     string
	id       string
	lifetime time.Duration // as the name space keeps it

	mu        sync.Mutex
	body      events.Registration // template: seq and time set per send
	expires   time.Time           // when the last accepted registration runs out
	stored    time.Time           // when the last registration RSP_EVENTS stored was sent
	dereg     bool
	err       error
	state     StateChange
	failing   time.Time          // when renewals began to fail (Retrying, Lost)
	listeners []chan StateChange // of StateChanged

	sendMu sync.Mutex // one event of this PE in flight, so seqs arrive in order

	// outcomes receives the outcomes of this PE's events for the
	// registration's life: one subscription, not one per renewal (each
	// one's interest would travel to every server of the cluster).
	outcomes *nats.Subscription

	kick     chan struct{}
	status   chan nats.Status // CONNECTED after a reconnect: register again at once
	cancel   context.CancelFunc
	loopDone chan struct{}
	done     chan struct{}
	doneOnce sync.Once
}

// Register registers pe in pool and returns once a name server accepted
// it, Registered. A refusal is an error wrapping the *events.Error of the
// outcome; bad input is an *events.FieldError naming the field. Transient
// failures are retried (each time with a new seq) within the client's
// timeout; after that the error is returned and nothing renews: a caller
// that wants to wait longer calls Register again with the same pe.ID
// while IsPermanent(err) is false (a PE id left empty is drawn anew by
// each call).
func (c *Client) Register(ctx context.Context, pool string, pe PE) (*Registration, error) {
	body, err := c.registrationBody(pool, pe)
	if err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	r := &Registration{
		c: c, pool: pool, id: body.PEID, body: body, lifetime: body.Lifetime(),
		kick: make(chan struct{}, 1), loopDone: make(chan struct{}), done: make(chan struct{}),
		// Listen before the first send, so no reconnect falls between them.
		// A status listener, not nc.SetReconnectHandler: the caller owns nc
		// and its handlers.
		status: c.nc.StatusChanged(nats.CONNECTED),
	}
	// Subscribe before the first publish, or its outcome could pass unseen.
	if r.outcomes, err = c.nc.SubscribeSync(events.OutcomeSubject(c.scope, pool, r.id)); err != nil {
		c.nc.RemoveStatusListener(r.status)
		return nil, fmt.Errorf("register %s/%s: subscribe to outcomes: %w", pool, r.id, err)
	}
	if err := r.sendWithin(ctx); err != nil {
		c.nc.RemoveStatusListener(r.status)
		_ = r.outcomes.Unsubscribe()
		return nil, fmt.Errorf("register %s/%s: %w", pool, r.id, err)
	}
	c.log.Debug("registered", "pool", pool, "pe_id", r.id, "lifetime", r.lifetime)
	loopCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.run(loopCtx)
	return r, nil
}

// IsPermanent reports whether err is a refusal that retrying cannot
// change: bad input (an *events.FieldError), or a name server's refusal
// with code bad_request, forbidden (no permission) or conflict (the PE id
// belongs to another key). Any other failure (no answer, no stream
// leader, a connection down, unavailable, stale) may pass when tried
// again.
func IsPermanent(err error) bool { return isPermanent(err) }

// KeepTrying runs attempt (a first Register or Serve, say) until it
// succeeds, fails with an error that IsPermanent (returned as it is), or
// ctx ends (ctx's error, with the last attempt's), waiting between
// attempts with exponential backoff and jitter, 50 ms to 2 s. Failures are
// logged at debug level; first, when not nil, is told the first one. It
// is for a PE that must come up during an outage: give it a fixed PE id,
// or each Register draws a new one.
func (c *Client) KeepTrying(ctx context.Context, what string, attempt func(context.Context) error, first func(error)) error {
	failed := false
	return retry(ctx, newBackoff(0), c.log, what, func(ctx context.Context) error {
		err := attempt(ctx)
		if err != nil && !failed && !isPermanent(err) && ctx.Err() == nil {
			failed = true
			if first != nil {
				first(err)
			}
		}
		return err
	})
}

// registrationBody checks pool and pe and turns them into a registration
// body (seq and time still unset).
func (c *Client) registrationBody(pool string, pe PE) (events.Registration, error) {
	if err := events.CheckPool(pool); err != nil {
		return events.Registration{}, err
	}
	return pe.body()
}

// Validate checks pe as Register would, before anything is sent: the
// error is an *events.FieldError naming the field. An empty ID passes (a
// random one is chosen at registration).
func (pe PE) Validate() error {
	_, err := pe.body()
	return err
}

func (pe PE) body() (events.Registration, error) {
	if pe.ID == "" {
		pe.ID = nuid.Next()
	}
	if pe.Lifetime < 0 {
		return events.Registration{}, events.Errf("lifetime", "%s must be ≥ 0 (0 means the default %s)", pe.Lifetime, events.DefaultLifetime)
	}
	if pe.Policy.Name == "" {
		pe.Policy.Name = policy.Default
	}
	body := events.Registration{
		PEID:       pe.ID,
		LifetimeMS: int64((pe.Lifetime + time.Millisecond - 1) / time.Millisecond),
		Transports: slices.Clone(pe.Transports),
		Policy:     pe.Policy,
		Meta:       maps.Clone(pe.Meta),
	}
	probe := body
	probe.Seq, probe.Time = 1, time.Now()
	if err := probe.Validate(probe.Time, events.DefaultClockSkew); err != nil {
		return events.Registration{}, err
	}
	if err := policy.ValidateParams(body.Policy.Name, policy.CandidateOf(body.PEID, 0, body.Policy, body.Meta)); err != nil {
		return events.Registration{}, err
	}
	return body, nil
}

// ID is the PE id.
func (r *Registration) ID() string { return r.id }

// Pool is the pool handle.
func (r *Registration) Pool() string { return r.pool }

// Done is closed when the registration ends (State Ended): deregistered,
// refused for good, or its client's connection closed. Failed renewals do
// not end it, however long they fail.
func (r *Registration) Done() <-chan struct{} { return r.done }

// Err says why Done was closed: ErrDeregistered, an error wrapping the
// *events.Error or *events.FieldError of a renewal refused for good, or
// one wrapping nats.ErrConnectionClosed. It is nil while the registration
// lives, Lost included.
func (r *Registration) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *Registration) finish(err error) {
	r.doneOnce.Do(func() {
		r.mu.Lock()
		r.err = err
		r.setState(Ended, err)
		r.mu.Unlock()
		_ = r.outcomes.Unsubscribe()
		close(r.done)
	})
}

// UpdateLoad re-registers at once with a new load (a fraction in [0, 1]);
// later renewals carry it too.
func (r *Registration) UpdateLoad(ctx context.Context, load float64) error {
	if load < 0 || load > 1 {
		return fmt.Errorf("update load: %w", events.Errf("policy.load", "%g is not a fraction in [0, 1]", load))
	}
	select {
	case <-r.done:
		return fmt.Errorf("update load %s/%s: %w", r.pool, r.id, r.Err())
	default:
	}
	r.mu.Lock()
	r.body.Policy.Load = load
	r.mu.Unlock()
	if err := r.sendWithin(ctx); err != nil {
		return fmt.Errorf("update load %s/%s: %w", r.pool, r.id, err)
	}
	select { // restart the renewal timer
	case r.kick <- struct{}{}:
	default:
	}
	return nil
}

// Deregister stops renewing, sends the deregistration and waits for its
// outcome. Done is closed afterwards, whatever the outcome.
func (r *Registration) Deregister(ctx context.Context) error {
	r.mu.Lock()
	again := r.dereg
	r.dereg = true
	r.mu.Unlock()
	if again {
		return nil
	}
	r.cancel()
	<-r.loopDone
	defer r.finish(ErrDeregistered)
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	if err := r.c.deregister(ctx, r.outcomes, r.pool, r.id); err != nil {
		var ee *events.Error
		if errors.As(err, &ee) && ee.Code == events.CodeNotFound {
			// Already gone (expired, or taken out after a failure): the
			// end a deregistration wants.
			r.c.log.Debug("deregister: PE was no longer registered", "pool", r.pool, "pe_id", r.id)
			return nil
		}
		return fmt.Errorf("deregister %s/%s: %w", r.pool, r.id, err)
	}
	r.c.log.Debug("deregistered", "pool", r.pool, "pe_id", r.id)
	return nil
}

// Deregister deregisters a PE that this client's key registered earlier,
// maybe from another process, and waits for the outcome.
func (c *Client) Deregister(ctx context.Context, pool, peID string) error {
	if err := events.CheckPool(pool); err != nil {
		return fmt.Errorf("deregister: %w", err)
	}
	if err := events.CheckPEID(peID); err != nil {
		return fmt.Errorf("deregister: %w", err)
	}
	if err := c.deregister(ctx, nil, pool, peID); err != nil {
		return fmt.Errorf("deregister %s/%s: %w", pool, peID, err)
	}
	return nil
}

// deregister sends the deregistration of peID; its outcome comes on sub
// (nil: a subscription of its own).
func (c *Client) deregister(ctx context.Context, sub *nats.Subscription, pool, peID string) error {
	ctx, cancel := c.wait(ctx)
	defer cancel()
	return retry(ctx, newBackoff(c.timeout), c.log, "deregister", func(ctx context.Context) error {
		body := events.Deregistration{PEID: peID, Seq: c.nextSeq(), Time: time.Now().UTC()}
		if err := body.Validate(body.Time, events.DefaultClockSkew); err != nil {
			return err
		}
		return c.sendEvent(ctx, sub, events.KindDeregister, pool, peID, body.Seq, events.Marshal(body))
	})
}

// sendWithin sends the registration, retrying transient failures within
// the client's timeout.
func (r *Registration) sendWithin(ctx context.Context) error {
	ctx, cancel := r.c.wait(ctx)
	defer cancel()
	return retry(ctx, newBackoff(r.c.timeout), r.c.log, "register", r.send)
}

// send sends the registration once, with a new seq, and waits for its
// outcome.
func (r *Registration) send(ctx context.Context) error {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	r.mu.Lock()
	body := r.body
	r.mu.Unlock()
	body.Seq = r.c.nextSeq()
	body.Time = time.Now().UTC()
	body.Conn = r.c.conn()
	if err := body.Validate(body.Time, events.DefaultClockSkew); err != nil {
		return err
	}
	start := time.Now()
	err := r.c.sendEvent(ctx, r.outcomes, events.KindRegister, r.pool, r.id, body.Seq, events.Marshal(body))
	r.mu.Lock()
	defer r.mu.Unlock()
	var stored *storedError
	if err == nil || errors.As(err, &stored) {
		r.stored = start
	}
	if err != nil {
		return err
	}
	r.expires = start.Add(r.lifetime)
	if was := r.state; r.setState(Registered, nil) && was.State != 0 { // 0: the first registration
		r.c.log.Info("registered again", "pool", r.pool, "pe_id", r.id, "was", was.State, "failing_for", time.Since(r.failing).Round(time.Millisecond))
	}
	return nil
}

// conn names the NATS connection events are sent over now (Registration's
// Conn), or nil while there is none. Both parts change at a reconnect, so
// each send asks again.
func (c *Client) conn() *events.Conn {
	server := c.nc.ConnectedServerId()
	cid, err := c.nc.GetClientID()
	if server == "" || err != nil {
		return nil
	}
	return &events.Conn{Server: server, CID: cid}
}

// untilRenewal is how long from now the next renewal is due: a third of
// the lifetime after the last registration that RSP_EVENTS stored was
// sent, so one lost renewal still leaves time. It counts from the send,
// not from the outcome: a slow outcome must not push the renewal past the
// end of the lifetime. And a stored renewal whose outcome did not come
// keeps the pace too: name servers that are behind count it as a renewal
// when it was stored, so the PE stays registered as long as its renewals
// are stored a third of a lifetime apart, however late they are applied.
func (r *Registration) untilRenewal() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(0, time.Until(r.stored.Add(r.lifetime/3)))
}

// attemptTimeout bounds one renewal attempt: the client's timeout, but at
// most a third of a lifetime, so that the wait for a late outcome does not
// delay the next renewal, and once the system is back (name servers give
// every PE a fresh lifetime at the end of an outage) a new attempt starts
// well within a lifetime, not after an old one's long wait.
func (r *Registration) attemptTimeout() time.Duration {
	return min(r.c.timeout, max(r.lifetime/3, 100*time.Millisecond))
}

// retryBackoff paces renewals that failed: exponential with jitter, never
// giving up, at most min(2 s, lifetime/4) apart.
func (r *Registration) retryBackoff() *backoff.ExponentialBackOff {
	b := newBackoff(0)
	b.MaxInterval = max(min(2*time.Second, r.lifetime/4), b.InitialInterval)
	b.Reset()
	return b
}

func (r *Registration) run(ctx context.Context) {
	defer close(r.loopDone)
	defer r.c.nc.RemoveStatusListener(r.status)
	b := r.retryBackoff()
	t := time.NewTimer(r.untilRenewal())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick: // UpdateLoad got a registration through
			b.Reset()
			t.Reset(r.untilRenewal())
			continue
		case <-r.status:
			// A new connection: name servers that watch connections
			// take the PE out when the old one's close reaches them,
			// unless it registers again over the new one first.
			r.c.log.Debug("reconnected: registering again", "pool", r.pool, "pe_id", r.id, "conn", r.c.conn())
			b.Reset()
		case <-t.C:
		}
		err := r.renew(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			b.Reset()
			t.Reset(r.untilRenewal())
		case isPermanent(err):
			r.end(fmt.Errorf("renew %s/%s: refused: %w", r.pool, r.id, err))
			return
		case errors.Is(err, nats.ErrConnectionClosed): // closed by its owner: no way back
			r.end(fmt.Errorf("renew %s/%s: %w", r.pool, r.id, err))
			return
		default:
			next := b.NextBackOff()
			var stored *storedError
			if errors.As(err, &stored) {
				next = r.untilRenewal() // stored: keep the pace, no backoff
			}
			t.Reset(r.failed(fmt.Errorf("renew %s/%s: %w", r.pool, r.id, err), next))
		}
	}
}

// end ends the registration on a renewal that retrying cannot mend.
func (r *Registration) end(err error) {
	r.c.log.Warn("registration ended", "pool", r.pool, "pe_id", r.id, "err", err)
	r.finish(err)
}

// renew sends one renewal, bounded by attemptTimeout and by the moment the
// last accepted registration runs out (so that State turns Lost in time).
func (r *Registration) renew(ctx context.Context) error {
	r.mu.Lock()
	expires := r.expires
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, r.attemptTimeout())
	defer cancel()
	if time.Now().Before(expires) {
		var cancelAt context.CancelFunc
		ctx, cancelAt = context.WithDeadline(ctx, expires)
		defer cancelAt()
	}
	return r.send(ctx)
}

// failed records a renewal that failed for a transient reason, err: the
// registration is Retrying while its lifetime lasts, Lost after. It
// returns when to try again: after next, or when the lifetime runs out if
// that comes first.
func (r *Registration) failed(err error, next time.Duration) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	log := r.c.log.With("pool", r.pool, "pe_id", r.id)
	left := time.Until(r.expires)
	// From Registered always through Retrying, even when this attempt was
	// the last the lifetime left room for: Lost only after Retrying.
	if r.state.State == Registered && r.setState(Retrying, err) {
		r.failing = time.Now()
		log.Warn("renewal failed: retrying", "err", err, "lifetime_left", left.Round(time.Millisecond))
	} else if left > 0 {
		log.Debug("renewal failed", "err", err, "retry_in", next)
	}
	if left > 0 {
		return min(next, left)
	}
	if r.setState(Lost, fmt.Errorf("%w: lifetime ran out %s ago: %w", ErrLost, (-left).Round(time.Millisecond), err)) {
		log.Warn("lifetime ran out unrenewed: the PE may be out of the name space; registering again until it gets through", "err", err)
	} else {
		log.Debug("registering again failed", "err", err, "retry_in", next)
	}
	return next
}

// sendEvent publishes a signed register/deregister event through JetStream
// and waits for the name server's outcome of this very seq on sub, the
// PE's outcome subject (nil: subscribed for this event alone). Outcomes of
// earlier events still queued on sub are skipped. A refusal is returned as
// the outcome's *events.Error.
func (c *Client) sendEvent(ctx context.Context, sub *nats.Subscription, kind events.Kind, pool, peID string, seq uint64, body []byte) error {
	if sub == nil {
		// Subscribe before publishing, or the outcome could pass unseen.
		var err error
		if sub, err = c.nc.SubscribeSync(events.OutcomeSubject(c.scope, pool, peID)); err != nil {
			return fmt.Errorf("subscribe to outcomes: %w", err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}

	msg := nats.NewMsg(events.Subject(c.scope, kind, pool))
	msg.Data = body
	msg.Header.Set(events.HeaderMsgID, events.MsgID(peID, seq))
	if err := c.signEvent(msg); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	ack, err := c.js.PublishMsg(ctx, msg)
	if err != nil {
		if denied := c.denied(msg.Subject, sub.Subject); denied != nil {
			return denied
		}
		return fmt.Errorf("publish %s: %w", msg.Subject, err)
	}
	if ack.Duplicate {
		return fmt.Errorf("publish %s: event %s was taken as a duplicate", msg.Subject, events.MsgID(peID, seq))
	}
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if denied := c.denied(msg.Subject, sub.Subject); denied != nil {
				return denied
			}
			return &storedError{fmt.Errorf("no outcome for %s seq %d: %w", kind, seq, err)}
		}
		var o events.Outcome
		if err := events.Decode(m.Data, &o); err != nil {
			c.log.Warn("bad outcome", "subject", m.Subject, "err", err)
			continue
		}
		if o.PEID != peID || o.Seq != seq {
			continue
		}
		if o.Accepted {
			return nil
		}
		if o.Error == nil {
			return &events.Error{Code: events.CodeUnavailable, Message: "refused without a reason"}
		}
		return o.Error
	}
}

// storedError is a failure after RSP_EVENTS stored the event (its PubAck
// came) but before its outcome did: the name servers will apply it, late
// (they are behind, or down). For expiry it already counts as a renewal at
// the time it was stored (docs/protocol.md, "Expiry").
type storedError struct{ err error }

func (e *storedError) Error() string { return e.err.Error() }
func (e *storedError) Unwrap() error { return e.err }

// denied returns a forbidden error (permanent: retrying cannot help) when
// the NATS server refused this client's credentials a publish or
// subscription on one of subjects: such a refusal reaches the client only
// as the connection's last asynchronous error, while the publish itself
// just gets no answer.
func (c *Client) denied(subjects ...string) error {
	last := c.nc.LastError()
	if !errors.Is(last, nats.ErrPermissionViolation) {
		return nil
	}
	for _, s := range subjects {
		if strings.Contains(last.Error(), `"`+s+`"`) {
			return &events.Error{Code: events.CodeForbidden, Message: "the credentials do not allow it: " + last.Error()}
		}
	}
	return nil
}
