package rspclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/rserpool/rsp/events"
)

// Resolution attempts: a request that gets no answer within
// resolveAttempt (the name server that took it may have died with it), or
// that finds no name server (the queue group may be moving to another
// replica), is sent again after a pause of resolvePause with jitter, up to
// resolveAttempts in all and within the client's timeout.
const (
	resolveAttempt  = time.Second
	resolveAttempts = 3
	resolvePause    = 100 * time.Millisecond
)

// Resolve asks the name servers for PEs of pool. The answer must be signed
// over this request's subject and fresh nonce, or it is refused. An error
// answer comes back as an error wrapping its *events.Error (code not_found
// for an unknown pool, ...). Fields of req left zero take the server's
// defaults. A request lost with a name server that died, or sent while
// none answered, is sent again (see resolveAttempts), so a replica's
// crash does not reach the caller.
func (c *Client) Resolve(ctx context.Context, pool string, req events.ResolveRequest) (*events.ResolveAnswer, error) {
	if err := events.CheckPool(pool); err != nil {
		return nil, fmt.Errorf("resolve: %w", err)
	}
	check := req
	if err := check.Validate(); err != nil { // Validate fills in max: check a copy
		return nil, fmt.Errorf("resolve: %w", err)
	}
	var body []byte
	if req.Max != 0 || len(req.Exclude) > 0 || req.Affinity != "" || len(req.Hint) > 0 {
		body = events.Marshal(req)
	}
	ctx, cancel := c.wait(ctx)
	defer cancel()
	var ans events.ResolveAnswer
	if err := c.ask(ctx, events.Subject(c.scope, events.KindResolve, pool), body, &ans); err != nil {
		return nil, fmt.Errorf("resolve %s: %w", pool, err)
	}
	if ans.Error != nil {
		return nil, ans.Error
	}
	return &ans, nil
}

// ask sends a request to the name servers and decodes their answer into
// out, once its signature over subject and a fresh nonce is verified. A
// request that gets no answer within resolveAttempt, or finds no name
// server, is sent again (see resolveAttempts), within ctx.
func (c *Client) ask(ctx context.Context, subject string, body []byte, out any) error {
	var m *nats.Msg
	var nonce string
	var err error
	for attempt := 1; ; attempt++ {
		nonce = nuid.Next()
		msg := nats.NewMsg(subject)
		msg.Header.Set(events.HeaderNonce, nonce)
		msg.Data = body
		actx, acancel := context.WithTimeout(ctx, resolveAttempt)
		m, err = c.request(actx, msg)
		acancel()
		lost := errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil
		if (!lost && !errors.Is(err, nats.ErrNoResponders)) || attempt == resolveAttempts {
			break
		}
		c.log.Debug("asking again", "subject", subject, "attempt", attempt, "err", err)
		pause := resolvePause/2 + rand.N(resolvePause)
		select {
		case <-time.After(pause):
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("no name server answers on %s: %w", subject, err)
	}
	if err != nil {
		return err
	}
	return c.checkAnswer(m, subject, nonce, out)
}

// checkAnswer verifies an answer's signature over subject and nonce and
// decodes it into out. A client with creds or name server keys also checks
// who signed it (events.VerifyAnswerChain); one without (insecure mode)
// only that the signature is valid, which proves the answer fresh and
// intact, not who made it.
func (c *Client) checkAnswer(m *nats.Msg, subject, nonce string, out any) error {
	if got := m.Header.Get(events.HeaderNonce); got != "" && got != nonce {
		return fmt.Errorf("answer carries nonce %q, not the request's", got)
	}
	var err error
	if c.trust.IsZero() {
		_, err = events.VerifyAnswer(m, subject, nonce)
	} else {
		_, err = events.VerifyAnswerChain(m, subject, nonce, c.trust)
	}
	if err != nil {
		return fmt.Errorf("refusing unverified answer: %w", err)
	}
	if err := events.Decode(m.Data, out); err != nil {
		return fmt.Errorf("bad answer: %w", err)
	}
	return nil
}

// ReportFailure reports that PE peID of pool failed, signed by this
// client's key, and returns once the event is stored (PubAck).
func (c *Client) ReportFailure(ctx context.Context, pool, peID, reason string) error {
	if err := events.CheckPool(pool); err != nil {
		return fmt.Errorf("report failure: %w", err)
	}
	body := events.FailureReport{PEID: peID, Time: time.Now().UTC(), Reason: reason}
	if err := body.Validate(body.Time, events.DefaultClockSkew); err != nil {
		return fmt.Errorf("report failure: %w", err)
	}
	msg := nats.NewMsg(events.Subject(c.scope, events.KindFailure, pool))
	msg.Data = events.Marshal(body)
	msg.Header.Set(events.HeaderMsgID, nuid.Next())
	if err := c.signEvent(msg); err != nil {
		return fmt.Errorf("report failure: sign: %w", err)
	}
	ctx, cancel := c.wait(ctx)
	defer cancel()
	// One Msg-Id for every attempt: a retry of a stored report is a duplicate.
	err := retry(ctx, newBackoff(c.timeout), c.log, "report failure", func(ctx context.Context) error {
		_, err := c.js.PublishMsg(ctx, msg)
		return err
	})
	if err != nil {
		return fmt.Errorf("report failure %s/%s: %w", pool, peID, err)
	}
	return nil
}
