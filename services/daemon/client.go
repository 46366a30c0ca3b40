package daemon

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/services/nameserver/auth"
)

// Client is what every daemon that speaks to rsp as a client (echo, dns,
// proxy, gateway) is configured with the same way: where NATS is, whose
// credentials, TLS towards NATS, and logging.
type Client struct {
	NATS                   string
	Creds, Data            string
	TLSCA, TLSCert, TLSKey string
	LogLevel, LogFormat    string
}

// AddFlags declares --nats, --creds, --data, --tls-ca, --tls-cert,
// --tls-key, --log-level and --log-format. role is the user whose
// credentials --data finds; credsNote, if any, is added to --creds' help.
func (c *Client) AddFlags(f *pflag.FlagSet, role auth.Role, credsNote string) {
	credsHelp := "NATS credentials `FILE` of a " + string(role) + " user"
	if credsNote != "" {
		credsHelp += " (" + credsNote + ")"
	}
	f.StringVar(&c.NATS, "nats", nats.DefaultURL, "NATS server `URL`s, comma-separated")
	f.StringVar(&c.Creds, "creds", "", credsHelp)
	f.StringVar(&c.Data, "data", ".rsp", "the name server's data `DIR`: "+string(role)+" credentials are looked up in DIR/auth/creds/<scope>/"+string(role)+".creds")
	f.StringVar(&c.TLSCA, "tls-ca", "", "PEM CA `FILE` that verifies the NATS servers")
	f.StringVar(&c.TLSCert, "tls-cert", "", "PEM client certificate `FILE`, for servers that verify clients")
	f.StringVar(&c.TLSKey, "tls-key", "", "PEM private key `FILE` of --tls-cert")
	f.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&c.LogFormat, "log-format", "text", "text or json")
}

// Logger is the logger of --log-level and --log-format.
func (c *Client) Logger() (*slog.Logger, error) { return Logger(c.LogLevel, c.LogFormat) }

// CredsFor is the credentials file of role's user in scope: --creds, else
// the role's file under --data (auth.FindCreds), else "" (none).
func (c *Client) CredsFor(scope string, role auth.Role) string {
	return auth.FindCreds(c.Creds, c.Data, scope, role)
}

// Dial connects to NATS (connection name name) with the credentials file
// creds ("" for none) and TLS of --tls-*; timeout bounds connecting and
// how long it keeps trying.
func (c *Client) Dial(ctx context.Context, name, creds string, timeout time.Duration, log *slog.Logger) (*nats.Conn, error) {
	cfg := natsconn.Config{URLs: c.NATS, Name: name, Creds: creds, Timeout: timeout, Retry: timeout, Logger: log}
	var err error
	if cfg.TLS, err = natsconn.TLSFiles(c.TLSCA, c.TLSCert, c.TLSKey); err != nil {
		return nil, err
	}
	return natsconn.Dial(ctx, cfg)
}
