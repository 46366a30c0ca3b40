package rspclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
)

// DefaultTimeout bounds each wait (an outcome, a PubAck, an answer) unless
// WithTimeout says otherwise.
const DefaultTimeout = 5 * time.Second

// Client speaks rsp for one scope with one signing identity. It is safe for
// concurrent use. It does not own the NATS connection: closing it is the
// caller's business.
type Client struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	scope   string
	kp      nkeys.KeyPair
	signer  *events.Signer // kp made ready once: nkeys re-derives the key at every signature
	pub     string
	jwt     string             // sent in Rsp-Jwt with every event; "" without
	trust   events.AnswerTrust // zero: answers need only a valid signature
	timeout time.Duration
	log     *slog.Logger
	denials *denials

	seqMu   sync.Mutex
	lastSeq uint64
}

type options struct {
	scope   string
	kp      nkeys.KeyPair
	jwt     string
	nsKeys  []string
	timeout time.Duration
	log     *slog.Logger
}

// Option configures a Client.
type Option func(*options) error

// WithScope sets the scope (default events.DefaultScope). The name must
// follow the scope rule.
func WithScope(scope string) Option {
	return func(o *options) error {
		if err := events.CheckScope(scope); err != nil {
			return err
		}
		o.scope = scope
		return nil
	}
}

// WithKey sets the signing identity: a user nkey with its seed. Without it
// the client makes a fresh user nkey in memory, which is enough for PUs and
// for PEs that never need to deregister from another process.
func WithKey(kp nkeys.KeyPair) Option {
	return func(o *options) error {
		if kp == nil {
			return events.Errf("key", "is nil")
		}
		if err := checkUserSeed(kp); err != nil {
			return err
		}
		o.kp = kp
		return nil
	}
}

// WithTimeout bounds each wait of the client (default DefaultTimeout): the
// outcome of an event, a PubAck, a resolution answer, a snapshot read.
func WithTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return events.Errf("timeout", "%s must be > 0", d)
		}
		o.timeout = d
		return nil
	}
}

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return events.Errf("logger", "is nil")
		}
		o.log = l
		return nil
	}
}

// New returns a client that speaks over nc.
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	if nc == nil {
		return nil, errors.New("rspclient: nil *nats.Conn")
	}
	o := options{scope: events.DefaultScope, timeout: DefaultTimeout, log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("rspclient: %w", err)
		}
	}
	if o.kp == nil {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return nil, fmt.Errorf("rspclient: create user nkey: %w", err)
		}
		o.kp = kp
	}
	pub, err := o.kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("rspclient: key: %w", err)
	}
	if o.jwt != "" {
		if err := checkUserJWT(o.jwt, o.kp); err != nil { // WithKey after WithCreds
			return nil, fmt.Errorf("rspclient: %w", err)
		}
	}
	trust, err := answerTrust(o.jwt, o.nsKeys)
	if err != nil {
		return nil, fmt.Errorf("rspclient: %w", err)
	}
	signer, err := events.NewSigner(o.kp)
	if err != nil {
		return nil, fmt.Errorf("rspclient: key: %w", err)
	}
	if err := checkInbox(nc, o.jwt, pub); err != nil {
		return nil, fmt.Errorf("rspclient: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("rspclient: jetstream: %w", err)
	}
	return &Client{
		nc: nc, js: js, scope: o.scope, kp: o.kp, signer: signer, pub: pub, jwt: o.jwt, trust: trust, timeout: o.timeout,
		log: o.log.With("scope", o.scope), denials: denialsOf(nc),
	}, nil
}

// PublicKey is the client's signer: its public user nkey (U...).
func (c *Client) PublicKey() string { return c.pub }

// Scope is the client's scope.
func (c *Client) Scope() string { return c.scope }

// nextSeq returns a sequence number higher than every one this client gave
// before and, as it is at least the wall clock in microseconds, higher than
// any a previous process with the same key gave (barring a clock step back).
func (c *Client) nextSeq() uint64 {
	c.seqMu.Lock()
	defer c.seqMu.Unlock()
	c.lastSeq = nextSeq(c.lastSeq, time.Now())
	return c.lastSeq
}

func nextSeq(last uint64, now time.Time) uint64 {
	return max(last+1, uint64(now.UnixMicro()))
}

// wait returns ctx bounded by the client's timeout.
func (c *Client) wait(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

func checkUserSeed(kp nkeys.KeyPair) error {
	seed, err := kp.Seed()
	if err != nil {
		return events.Errf("key", "has no seed, cannot sign: %v", err)
	}
	pre, _, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return events.Errf("key", "bad seed: %v", err)
	}
	if pre != nkeys.PrefixByteUser {
		return events.Errf("key", "is a %s nkey, want a user nkey (seed SU...)", pre)
	}
	return nil
}

// LoadOrCreateKey reads the user nkey seed in the file at path or, when
// there is no such file, makes a new user nkey and saves its seed there
// (directories 0700, file 0600). The file holds the seed (SU...) alone or
// in the decorated form of a .creds/.nk file.
func LoadOrCreateKey(path string) (nkeys.KeyPair, error) {
	if path == "" {
		return nil, events.Errf("key", "file path is empty")
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	return parseKey(path, data)
}

func parseKey(path string, data []byte) (nkeys.KeyPair, error) {
	defer wipe(data)
	kp, err := nkeys.FromSeed(bytes.TrimSpace(data))
	if err != nil {
		kp, err = nkeys.ParseDecoratedNKey(data)
	}
	if err != nil {
		return nil, fmt.Errorf("key: %s holds no nkey seed: %w", path, err)
	}
	if err := checkUserSeed(kp); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return kp, nil
}

func createKey(path string) (nkeys.KeyPair, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("key: create user nkey: %w", err)
	}
	seed, err := kp.Seed() // the key's own bytes: do not wipe
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	// Write a temporary file in full, then link it into place: a reader
	// never sees a half-written seed, and if another process created the
	// file meanwhile, the link fails and its key wins.
	f, err := os.CreateTemp(dir, ".user-*.nk")
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }()
	_, werr := f.Write(append(slices.Clone(seed), '\n'))
	merr := f.Chmod(0o600)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, merr, serr, cerr); err != nil {
		return nil, fmt.Errorf("key: write %s: %w", path, err)
	}
	if err := os.Link(tmp, path); errors.Is(err, fs.ErrExist) {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("key: %w", err)
		}
		return parseKey(path, data)
	} else if err != nil {
		// No hard links here (some file systems): rename, which is atomic
		// too but does not stop at an existing file.
		if err := os.Rename(tmp, path); err != nil {
			return nil, fmt.Errorf("key: save %s: %w", path, err)
		}
	}
	return kp, nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}

// retry runs op with exponential backoff and jitter until it succeeds,
// returns a backoff.Permanent error, ctx ends or b gives up. It returns the
// last error of op, so a caller sees why it failed, not only that time ran
// out.
func retry(ctx context.Context, b backoff.BackOff, log *slog.Logger, what string, op func(context.Context) error) error {
	var last error
	err := backoff.RetryNotify(func() error {
		err := op(ctx)
		if err == nil {
			return nil
		}
		if isPermanent(err) {
			return backoff.Permanent(err)
		}
		last = err
		return err
	}, backoff.WithContext(b, ctx), func(err error, next time.Duration) {
		log.Debug("retrying", "what", what, "err", err, "in", next)
	})
	if err != nil && last != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) && !errors.Is(last, err) {
		return fmt.Errorf("%w (last attempt: %v)", err, last)
	}
	return err
}

func newBackoff(maxElapsed time.Duration) *backoff.ExponentialBackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(50*time.Millisecond),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMultiplier(2),
		backoff.WithMaxInterval(2*time.Second),
		backoff.WithMaxElapsedTime(maxElapsed),
	)
}

// isPermanent reports whether retrying err cannot help: bad input, or a
// name server that refused the event for a reason a new seq does not fix.
func isPermanent(err error) bool {
	var pe *backoff.PermanentError
	if errors.As(err, &pe) {
		return true
	}
	var fe *events.FieldError
	if errors.As(err, &fe) {
		return true
	}
	var ee *events.Error
	if errors.As(err, &ee) {
		switch ee.Code {
		case events.CodeBadRequest, events.CodeForbidden, events.CodeConflict:
			return true
		}
	}
	return false
}
