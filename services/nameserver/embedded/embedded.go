// Package embedded starts a NATS server with JetStream inside the process:
// the name server's default, and the real server every test runs against.
package embedded

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config says where the embedded server listens and keeps its data.
type Config struct {
	// Listen is HOST:PORT for clients; port 0 or -1 picks a free one.
	Listen string
	// DataDir holds the JetStream store (nats-server adds "jetstream").
	DataDir string
	// Name is the server name (JetStream needs a stable one); default "rsp".
	Name string
	// Logger receives the server's warnings and errors (its notices at
	// Debug); nil discards them.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for the server to accept clients.
	ReadyTimeout time.Duration
	// TLS, when set, is required of every client connection and of the
	// cluster routes.
	TLS *tls.Config
	// ClusterListen is HOST:PORT for cluster routes; empty: no cluster.
	ClusterListen string
	// Routes are the nats-route:// URLs of the other members, comma-separated.
	Routes string
	// SyncInterval is how often JetStream flushes its files to the disk
	// (fsync). 0 (auto): a server that is not clustered syncs after every
	// write before it is acknowledged (nats-server's sync_interval:
	// always), so that nothing acknowledged is lost to a crash of the
	// machine either; a cluster member keeps nats-server's default (2
	// min), its durability being the quorum of replicas that stored each
	// write on other machines. Negative: always; positive: that interval,
	// which loses at most that much of a single server's acknowledged
	// writes when its machine (not the process) fails. See the README,
	// "Durability".
	SyncInterval time.Duration
	// Configure, when set, adjusts the server options last (operator
	// mode, accounts: see package auth).
	Configure func(*server.Options) error
}

// Start starts the server and waits until it accepts clients.
func Start(cfg Config) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %q is not HOST:PORT: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < -1 || port > 65535 {
		return nil, fmt.Errorf("listen: port %q is not a number in 0..65535", portStr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if cfg.Name == "" {
		cfg.Name = "rsp"
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		NoSigs:     true, // the name server handles signals itself
		NoLog:      cfg.Logger == nil,
	}
	switch {
	case cfg.SyncInterval > 0:
		opts.SyncInterval = cfg.SyncInterval
	case cfg.SyncInterval < 0, cfg.ClusterListen == "":
		opts.SyncAlways = true
	}
	if cfg.TLS != nil {
		opts.TLSConfig = cfg.TLS
		opts.TLS = true
		opts.TLSVerify = cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		opts.TLSTimeout = 5
	}
	if cfg.ClusterListen != "" {
		ch, cp, err := net.SplitHostPort(cfg.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("cluster listen: %q is not HOST:PORT: %w", cfg.ClusterListen, err)
		}
		opts.Cluster.Host = ch
		if opts.Cluster.Port, err = strconv.Atoi(cp); err != nil {
			return nil, fmt.Errorf("cluster listen: port %q is not a number", cp)
		}
		opts.Cluster.Name = "rsp"
		if cfg.Routes != "" {
			opts.Routes = server.RoutesFromStr(cfg.Routes)
		}
		if cfg.TLS != nil {
			opts.Cluster.TLSConfig = cfg.TLS
			opts.Cluster.TLSTimeout = 5
		}
	}
	if cfg.Configure != nil {
		if err := cfg.Configure(opts); err != nil {
			return nil, fmt.Errorf("embedded nats server: %w", err)
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats server: %w", err)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// Always a logger, even a silent one: a fatal error (a port in use,
	// JetStream refusing the configuration) reaches Start through it, and
	// Start returns it at once instead of waiting out ReadyTimeout.
	log := slogAdapter{l: logger.With("component", "nats-server"), fatal: make(chan string, 1)}
	s.SetLoggerV2(log, false, false, false)
	go s.Start()
	deadline := time.Now().Add(cfg.ReadyTimeout)
	for !s.ReadyForConnections(50 * time.Millisecond) { // polls every 25 ms
		select {
		case msg := <-log.fatal:
			s.Shutdown()
			return nil, fmt.Errorf("embedded nats server: %s", msg)
		default:
		}
		if time.Now().After(deadline) {
			s.Shutdown()
			return nil, fmt.Errorf("embedded nats server not ready within %s", cfg.ReadyTimeout)
		}
	}
	return s, nil
}

// slogAdapter is the nats-server Logger interface on top of slog. Fatal
// errors also go to fatal (the first one; nats-server stops after it).
type slogAdapter struct {
	l     *slog.Logger
	fatal chan string
}

func (a slogAdapter) Noticef(f string, v ...any) { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Warnf(f string, v ...any)   { a.l.Warn(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Fatalf(f string, v ...any) {
	msg := fmt.Sprintf(f, v...)
	a.l.Error(msg)
	select {
	case a.fatal <- msg:
	default:
	}
}
func (a slogAdapter) Errorf(f string, v ...any) { a.l.Error(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Debugf(f string, v ...any) { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a slogAdapter) Tracef(f string, v ...any) {}
