// Package natsconn is the one way rsp's programs connect to NATS: the CLI,
// the name server in --nats mode, and services built on the client library.
// It adds credentials and TLS, bounds the first connect, and reconnects for
// ever with exponential backoff and jitter (no retry storms when a server
// goes away under many clients).
package natsconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/events"
)

// Config says where and how to connect.
type Config struct {
	// URLs is a comma-separated list of NATS server URLs.
	URLs string
	// Name is the connection name the server shows (e.g. "rsp-cli").
	Name string
	// Creds is a NATS .creds file (user JWT and nkey seed); empty: none.
	Creds string
	// TLS, when set, is used for the connection (see TLSFiles).
	TLS *tls.Config
	// Timeout bounds each connect attempt; default 5 s.
	Timeout time.Duration
	// Retry bounds the time spent retrying the first connect; 0 tries once,
	// negative retries until ctx ends (a PE that waits for NATS to come
	// up).
	Retry time.Duration
	// Options are appended last (e.g. nats.InProcessServer).
	Options []nats.Option
	// Logger gets disconnects and reconnects; default slog.Default().
	Logger *slog.Logger
}

// Dial connects. The first connect is retried with backoff for up to
// cfg.Retry; after that the connection reconnects by itself for ever.
func Dial(ctx context.Context, cfg Config) (*nats.Conn, error) {
	if strings.TrimSpace(cfg.URLs) == "" && len(cfg.Options) == 0 {
		return nil, errors.New("nats: no server URL")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	reconnect := newBackoff(0)
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(cfg.Timeout),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			if attempts <= 1 {
				reconnect.Reset()
			}
			return reconnect.NextBackOff()
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	if cfg.Creds != "" {
		if _, err := os.Stat(cfg.Creds); err != nil {
			return nil, fmt.Errorf("creds: %w", err)
		}
		opts = append(opts, Creds(cfg.Creds))
	}
	if cfg.TLS != nil {
		opts = append(opts, nats.Secure(cfg.TLS))
	}
	opts = append(opts, cfg.Options...)
	var nc *nats.Conn
	err := backoff.RetryNotify(func() error {
		var err error
		nc, err = nats.Connect(cfg.URLs, opts...)
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
			return backoff.Permanent(err) // retrying will not help
		}
		return err
	}, backoff.WithContext(firstConnect(cfg.Retry), ctx), func(err error, next time.Duration) {
		log.Warn("NATS not reachable yet", "urls", cfg.URLs, "err", err, "retry_in", next)
	})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.URLs, err)
	}
	return nc, nil
}

// newBackoff is exponential backoff with jitter from 100 ms to 5 s, given
// up after maxElapsed (0: never).
func newBackoff(maxElapsed time.Duration) *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = maxElapsed
	return b
}

// firstConnect retries the first connect for up to retry; 0 tries once,
// negative for ever.
func firstConnect(retry time.Duration) backoff.BackOff {
	switch {
	case retry < 0:
		return newBackoff(0)
	case retry == 0:
		return &backoff.StopBackOff{}
	}
	return newBackoff(retry)
}

// TLSFiles makes a client TLS config: ca verifies the servers (empty: the
// system's roots); cert and key, both or neither, are the client's own
// certificate for servers that verify clients. With no file at all it
// returns nil: no TLS beyond what a tls:// URL asks for.
func TLSFiles(ca, cert, key string) (*tls.Config, error) {
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pool, err := loadCA(ca)
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("tls: --tls-cert and --tls-key go together")
	}
	if cert != "" {
		kp, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c, nil
}

// ServerTLSFiles makes a server TLS config from its certificate and key;
// with ca, clients must present a certificate signed by it.
func ServerTLSFiles(ca, cert, key string) (*tls.Config, error) {
	if cert == "" || key == "" {
		return nil, errors.New("tls: a server needs both --tls-cert and --tls-key")
	}
	kp, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{kp}}
	if ca != "" {
		pool, err := loadCA(ca)
		if err != nil {
			return nil, err
		}
		c.ClientCAs = pool
		c.RootCAs = pool // routes dial other servers with the same config
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls: CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls: CA: no PEM certificate in %s", path)
	}
	return pool, nil
}

// Creds authenticates with a .creds file and takes replies on the user's
// own inbox prefix, events.InboxPrefix(user public key): the only inboxes
// a pe or pu user may subscribe to (docs/protocol.md, Connecting).
func Creds(path string) nats.Option {
	return func(o *nats.Options) error {
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("creds: %w", err)
		}
		token, err := jwt.ParseDecoratedJWT(data)
		if err != nil {
			return fmt.Errorf("creds: %s: %w", path, err)
		}
		uc, err := jwt.DecodeUserClaims(token)
		if err != nil {
			return fmt.Errorf("creds: %s: %w", path, err)
		}
		if err := nats.UserCredentials(path)(o); err != nil {
			return err
		}
		return nats.CustomInboxPrefix(events.InboxPrefix(uc.Subject))(o)
	}
}
