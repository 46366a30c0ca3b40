package rspclient

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// ErrPermission wraps the refusal of a request its credentials do not
// allow: the NATS server says so at once ("Permissions Violation for
// Publish to ..."), asynchronously, and the request would otherwise wait
// for its timeout.
var ErrPermission = errors.New("not permitted by this credential")

// denials cancels the requests to a subject when the server refuses to
// let this connection publish there.
type denials struct {
	mu      sync.Mutex
	waiting map[string][]*context.CancelCauseFunc
}

// connDenials holds one denials per connection: the clients of one
// connection share it, so the connection's error handler is chained once,
// however many clients come and go on it.
var (
	connDenialsMu sync.Mutex
	connDenials   = map[*nats.Conn]*denials{}
)

// denialsOf returns the denials of nc, hooked onto its async error
// handler the first time; connections closed since are forgotten.
func denialsOf(nc *nats.Conn) *denials {
	connDenialsMu.Lock()
	defer connDenialsMu.Unlock()
	if d := connDenials[nc]; d != nil {
		return d
	}
	maps.DeleteFunc(connDenials, func(c *nats.Conn, _ *denials) bool { return c.IsClosed() })
	d := &denials{}
	d.hook(nc)
	connDenials[nc] = d
	return d
}

// hook chains onto nc's async error handler.
func (d *denials) hook(nc *nats.Conn) {
	prev := nc.Opts.AsyncErrorCB
	nc.SetErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
		if subject, ok := deniedPublish(err); ok {
			d.deny(subject)
		}
		if prev != nil {
			prev(nc, sub, err)
		}
	})
}

// deniedPublish parses nats.go's error for a refused publish:
// `nats: permissions violation: Permissions Violation for Publish to "S"`.
func deniedPublish(err error) (string, bool) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return "", false
	}
	const marker = `for Publish to "`
	s := err.Error()
	i := strings.Index(s, marker)
	if i < 0 {
		return "", false
	}
	s = s[i+len(marker):]
	j := strings.IndexByte(s, '"')
	if j < 0 {
		return "", false
	}
	return s[:j], true
}

func (d *denials) deny(subject string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, cancel := range d.waiting[subject] {
		(*cancel)(fmt.Errorf("publish to %s: %w", subject, ErrPermission))
	}
	delete(d.waiting, subject)
}

// watch makes a refused publish to subject cancel; the func returned
// stops that.
func (d *denials) watch(subject string, cancel context.CancelCauseFunc) func() {
	w := &cancel
	d.mu.Lock()
	if d.waiting == nil {
		d.waiting = map[string][]*context.CancelCauseFunc{}
	}
	d.waiting[subject] = append(d.waiting[subject], w)
	d.mu.Unlock()
	return func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		ws := slices.DeleteFunc(d.waiting[subject], func(x *context.CancelCauseFunc) bool { return x == w })
		if len(ws) == 0 {
			delete(d.waiting, subject)
		} else {
			d.waiting[subject] = ws
		}
	}
}

// request is nc.RequestMsgWithContext that fails at once with
// ErrPermission when the server refuses the publish.
func (c *Client) request(ctx context.Context, msg *nats.Msg) (*nats.Msg, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer c.denials.watch(msg.Subject, cancel)()
	m, err := c.nc.RequestMsgWithContext(ctx, msg)
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, ErrPermission) {
		return nil, cause
	}
	return m, err
}
