// Command nameserver runs an rsp name server: by default on a NATS server
// with JetStream embedded in the process, or, with --nats, as one more
// stateless replica on existing NATS servers.
package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/daemon"
	"github.com/rserpool/rsp/services/nameserver/auth"
	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/monitor"
	"github.com/rserpool/rsp/services/nameserver/server"
)

type options struct {
	data      string
	natsURLs  string
	listen    string
	scopes    []string
	id        string
	replicas  int
	skew      time.Duration
	logLevel  string
	logFormat string
	creds     []string
	insecure  bool

	operatorKeys []string
	accountJWTs  []string

	disconnectGrace time.Duration
	maxPEsPerSigner int
	newPEsPerSecond float64
	maxBadReports   []string
	reportWindow    []string
	checkReported   bool

	tlsCert, tlsKey, tlsCA string
	clusterListen, routes  string
	sync                   string

	metrics string
}

func main() { daemon.Main("nameserver", command()) }

func command() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "nameserver",
		Short: "Run an rsp name server",
		Long: `Run an rsp name server: it keeps the name space of its scopes in JetStream,
applies the signed register/deregister events of pool elements, answers
resolution requests and announces pool changes.

With no flags it starts a NATS server with JetStream inside the process
(listening on --listen, data under --data) and serves scope "default".
With --nats it joins existing NATS servers instead; any number of name
servers can run side by side there and share the work.

Every flag can also be set by an environment variable: RSP_ and the flag
name in upper case with "-" as "_" (RSP_DATA, RSP_NATS, RSP_SCOPE=a,b).`,
		Example: `  nameserver                                  # embedded NATS on 127.0.0.1:4222
  nameserver --listen 127.0.0.1:4333 --data /tmp/rsp
  nameserver --nats nats://10.0.0.1:4222,nats://10.0.0.2:4222 --scope default --scope lab`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE:          daemon.RunE(func(ctx context.Context) error { return run(ctx, o) }),
	}
	f := cmd.Flags()
	f.StringVar(&o.data, "data", ".rsp", "data directory of the embedded NATS server")
	f.StringVar(&o.natsURLs, "nats", "", "join these NATS servers (comma-separated URLs) instead of embedding one")
	f.StringVar(&o.listen, "listen", "127.0.0.1:4222", "client HOST:PORT of the embedded NATS server")
	f.StringSliceVar(&o.scopes, "scope", []string{"default"}, "scope to serve (repeatable)")
	f.StringVar(&o.id, "id", "", "id of this replica (default: host name and a random suffix)")
	f.IntVar(&o.replicas, "replicas", 0, "replicas of the stream RSP_EVENTS and the buckets: 0 (auto) keeps those that exist as they are and creates new ones with min(3, JetStream servers of the cluster); 1 to 5 also scales existing ones")
	f.DurationVar(&o.skew, "clock-skew", 30*time.Second, "allowed difference between an event's time and this server's clock")
	f.StringArrayVar(&o.creds, "creds", nil, "with --nats: NATS credentials of a nameserver user, FILE for every scope or SCOPE=FILE (repeatable)")
	f.StringArrayVar(&o.accountJWTs, "account-jwt", nil, "with --nats and --creds: the scope account's JWT, [SCOPE=]FILE (DIR/auth/accounts/<scope>/account.jwt of 'rsp auth init'); written to the bucket rsp_auth when it holds none, so later replicas need not be told")
	f.StringSliceVar(&o.operatorKeys, "operator-key", nil, "with --nats: operator public keys trusted to sign the scope accounts' JWTs (default: any operator)")
	f.BoolVar(&o.insecure, "insecure", false, "run the embedded server without authorization (for experiments only)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate: the embedded server's (TLS required of clients and routes); with --nats, this server's client certificate")
	f.StringVar(&o.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&o.tlsCA, "tls-ca", "", "PEM CA: with --tls-cert on the embedded server, clients and routes must present a certificate it signed; with --nats, the CA that verifies the servers")
	f.StringVar(&o.clusterListen, "cluster-listen", "", "HOST:PORT for cluster routes of the embedded server (empty: no cluster)")
	f.StringVar(&o.routes, "routes", "", "comma-separated nats-route:// URLs of the other cluster members")
	f.StringVar(&o.sync, "sync", "auto", "when the embedded server's JetStream flushes its files to the disk: always (before acknowledging each write: nothing acknowledged is lost, even when the machine fails), an interval such as 2m (faster; a machine failure may lose that much of what was acknowledged; a crash of the process alone loses nothing either way), or auto: always for a single server, 2m for a cluster member (--cluster-listen), whose durability is the quorum of replicas on other machines")
	f.DurationVar(&o.disconnectGrace, "disconnect-grace", server.DefaultDisconnectGrace, "how long a PE whose NATS connection closed may take to register again over a new one before it is taken out (operator mode; negative: off)")
	f.IntVar(&o.maxPEsPerSigner, "max-pes-per-signer", server.DefaultMaxPEsPerSigner, "PEs one signer (a credential's key) may own in a scope; a new one beyond is refused forbidden (negative: no limit)")
	f.Float64Var(&o.newPEsPerSecond, "new-pes-per-second", server.DefaultNewPEsPerSecond, "new PEs one signer may add to a scope per second, with a burst of two seconds' worth (renewals not counted); beyond, refused unavailable and retried by clients (negative: no limit)")
	f.StringSliceVar(&o.maxBadReports, "max-bad-pe-reports", nil, "distinct reporters within the report window that take a PE out: N for every scope or SCOPE=N (repeatable; default 3)")
	f.StringSliceVar(&o.reportWindow, "report-window", nil, "how long a failure report counts: DURATION for every scope or SCOPE=DURATION (repeatable; default 10s)")
	f.BoolVar(&o.checkReported, "check-reported", true, "check a reported PE itself (request to its nats transport, TCP connect to its tcp transport) and take it out at once if that fails")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json (lines about an event carry event_id, event_seq, pool and pe_id)")
	f.StringVar(&o.metrics, "metrics", "", "HOST:PORT of the HTTP listener for /metrics (Prometheus), /healthz, /readyz and the live pool page / (empty: none); it shows every pool to whoever reaches it, so keep it on loopback or behind a proxy that authenticates")
	return cmd
}

func run(ctx context.Context, o options) error {
	log, err := daemon.Logger(o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	for _, sc := range o.scopes {
		if err := events.CheckScope(sc); err != nil {
			return fmt.Errorf("--scope: %w", err)
		}
	}
	creds, err := parseScoped("--creds", o.creds, o.scopes)
	if err != nil {
		return err
	}
	accountJWTs, err := readAccountJWTs(o.accountJWTs, o.scopes)
	if err != nil {
		return err
	}
	reports, err := parseReports(o.maxBadReports, o.reportWindow, o.scopes)
	if err != nil {
		return err
	}
	var mon *monitorRun
	if o.metrics != "" {
		if mon, err = startMonitor(ctx, o.metrics, log); err != nil {
			return err
		}
		defer mon.stop()
	}
	urls := o.natsURLs
	var ns *natsserver.Server
	var store *auth.Store
	if urls == "" {
		ecfg := embedded.Config{Listen: o.listen, DataDir: o.data, Logger: log,
			ClusterListen: o.clusterListen, Routes: o.routes}
		if ecfg.SyncInterval, err = parseSync(o.sync); err != nil {
			return err
		}
		if o.tlsCert != "" || o.tlsKey != "" {
			if ecfg.TLS, err = natsconn.ServerTLSFiles(o.tlsCA, o.tlsCert, o.tlsKey); err != nil {
				return err
			}
		}
		if o.insecure {
			log.Warn("--insecure: anyone who reaches the NATS port may connect, register any PE and read every pool; events are still signature-checked")
		} else {
			if store, err = auth.Init(filepath.Join(o.data, "auth"), o.scopes); err != nil {
				return err
			}
			ecfg.Configure = store.Configure
		}
		if ns, err = embedded.Start(ecfg); err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		urls = ns.ClientURL()
		abs, _ := filepath.Abs(o.data)
		log.Info("embedded NATS server with JetStream started", "url", urls, "data", abs, "operator_mode", store != nil)
	} else if len(creds) == 0 {
		log.Warn("no --creds: events are signature-checked but not held against NATS JWT authorization")
	}

	var replicas []*replica
	defer func() {
		for _, r := range replicas {
			r.stop(log)
		}
	}()
	for _, g := range groups(o, store, creds, accountJWTs) {
		conn := natsconn.Config{URLs: urls, Name: "rsp-nameserver", Creds: g.creds, Retry: time.Minute, Logger: log}
		if ns != nil {
			// In-process: no socket, no TLS to set up (so no tls:// URL).
			conn.URLs = ""
			conn.Options = append(conn.Options, nats.InProcessServer(ns))
		} else if conn.TLS, err = natsconn.TLSFiles(o.tlsCA, o.tlsCert, o.tlsKey); err != nil {
			return err
		}
		r, err := startReplica(ctx, conn, server.Config{
			Scopes: g.scopes, ID: o.id, Replicas: o.replicas, ClockSkew: o.skew, Logger: log, Auth: g.auth,
			DisconnectGrace: o.disconnectGrace, NoChecks: !o.checkReported,
			MaxPEsPerSigner: o.maxPEsPerSigner, NewPEsPerSecond: o.newPEsPerSecond,
			MaxBadPEReports: reports.defaults.MaxBadPEReports, ReportWindow: reports.defaults.Window,
			ScopeReports: reports.forScopes(g.scopes), Metrics: mon.metricsOrNil(),
		})
		if err != nil {
			return err
		}
		replicas = append(replicas, r)
	}
	if mon != nil {
		srvs := make([]*server.NameServer, len(replicas))
		for i, r := range replicas {
			srvs[i] = r.srv
		}
		if err := mon.Attach(srvs...); err != nil {
			return err
		}
	}
	fmt.Print(banner(replicas[0].srv.ID(), o, urls, store, mon))
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// monitorRun is the HTTP listener of --metrics: metrics, health and the
// pool page.
type monitorRun struct {
	*monitor.Monitor
	metrics *server.Metrics
	url     string // http://HOST:PORT/
	stop    func() // ends the page streams and waits for the listener
}

func (m *monitorRun) metricsOrNil() *server.Metrics {
	if m == nil {
		return nil
	}
	return m.metrics
}

// startMonitor serves metrics, health and the pool page on addr until
// stop is called.
func startMonitor(ctx context.Context, addr string, log *slog.Logger) (*monitorRun, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := server.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	if host, _, _ := net.SplitHostPort(addr); !isLoopback(host) {
		log.Warn("--metrics listens beyond loopback: the pool page and /api/pools show every PE of every scope to whoever reaches it", "addr", addr)
	}
	mon := monitor.New(monitor.Config{Gatherer: reg, Logger: log})
	reg.MustRegister(mon.Collector())
	srv := &http.Server{Handler: mon.Handler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10}
	url := "http://" + ln.Addr().String() + "/"
	log.Info("monitor listening", "page", url, "metrics", url+"metrics")
	// Served until stop, after the replicas have stopped: while they drain,
	// /readyz says so and /metrics still answers.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := daemon.ServeHTTP(sctx, srv, ln, log, 5*time.Second); err != nil {
			log.Error("monitor HTTP server", "err", err)
		}
	}()
	return &monitorRun{Monitor: mon, metrics: metrics, url: url, stop: func() {
		mon.Close() // the page streams end, so Shutdown need not wait for them
		cancel()
		<-done
	}}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// group is a set of scopes served on one connection. In operator mode each
// scope is an account of its own, so each scope gets its own connection.
type group struct {
	scopes []string
	creds  string
	auth   *server.AuthConfig
}

func groups(o options, store *auth.Store, creds, accountJWTs map[string]string) []group {
	switch {
	case store != nil:
		var gs []group
		for _, sc := range o.scopes {
			acct, _ := store.AccountJWT(sc)
			gs = append(gs, group{scopes: []string{sc}, creds: store.CredsPath(sc, auth.RoleNameServer),
				auth: &server.AuthConfig{AccountJWT: acct, Operators: []string{store.OperatorPublicKey()}}})
		}
		return gs
	case len(creds) > 0:
		var gs []group
		for _, sc := range o.scopes {
			gs = append(gs, group{scopes: []string{sc}, creds: cmp.Or(creds[sc], creds[""]),
				auth: &server.AuthConfig{AccountJWT: accountJWTs[sc], Operators: o.operatorKeys}})
		}
		return gs
	}
	return []group{{scopes: o.scopes}}
}

// parseScoped reads the values of a [SCOPE=]FILE flag: FILE for every
// scope, or SCOPE=FILE; once given, every scope needs one.
func parseScoped(flag string, values, scopes []string) (map[string]string, error) {
	m := map[string]string{}
	for _, v := range values {
		scope, file, found := strings.Cut(v, "=")
		if !found {
			scope, file = "", v
		} else if !slices.Contains(scopes, scope) {
			return nil, fmt.Errorf("%s %s: scope %q is not served (--scope)", flag, v, scope)
		}
		m[scope] = file
	}
	if len(m) > 0 && m[""] == "" {
		for _, sc := range scopes {
			if m[sc] == "" {
				return nil, fmt.Errorf("%s: no file for scope %s (give FILE or %s=FILE)", flag, sc, sc)
			}
		}
	}
	return m, nil
}

// readAccountJWTs reads --account-jwt files into scope → JWT.
func readAccountJWTs(values, scopes []string) (map[string]string, error) {
	files, err := parseScoped("--account-jwt", values, scopes)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, sc := range scopes {
		if f := cmp.Or(files[sc], files[""]); f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("--account-jwt: %w", err)
			}
			out[sc] = strings.TrimSpace(string(b))
		}
	}
	return out, nil
}

// reportFlags are the failure-report settings of --max-bad-pe-reports
// and --report-window: defaults for every scope, and per scope.
type reportFlags struct {
	defaults server.ReportSettings
	scopes   map[string]server.ReportSettings
}

// forScopes are the per-scope settings of scopes (those served by one
// replica).
func (r reportFlags) forScopes(scopes []string) map[string]server.ReportSettings {
	out := map[string]server.ReportSettings{}
	for _, sc := range scopes {
		if rs, ok := r.scopes[sc]; ok {
			out[sc] = rs
		}
	}
	return out
}

// parseReports reads --max-bad-pe-reports (N or SCOPE=N) and
// --report-window (DURATION or SCOPE=DURATION).
func parseReports(maxBad, window, scopes []string) (reportFlags, error) {
	r := reportFlags{scopes: map[string]server.ReportSettings{}}
	split := func(flag, v string) (string, string, error) {
		scope, val, found := strings.Cut(v, "=")
		if !found {
			return "", v, nil
		}
		if !slices.Contains(scopes, scope) {
			return "", "", fmt.Errorf("--%s %s: scope %q is not served (--scope)", flag, v, scope)
		}
		return scope, val, nil
	}
	for _, v := range maxBad {
		scope, val, err := split("max-bad-pe-reports", v)
		if err != nil {
			return r, err
		}
		n, err := strconv.Atoi(val)
		if err != nil || n < 1 {
			return r, fmt.Errorf("--max-bad-pe-reports %s: %q is not a whole number ≥ 1", v, val)
		}
		if scope == "" {
			r.defaults.MaxBadPEReports = n
		} else {
			rs := r.scopes[scope]
			rs.MaxBadPEReports = n
			r.scopes[scope] = rs
		}
	}
	for _, v := range window {
		scope, val, err := split("report-window", v)
		if err != nil {
			return r, err
		}
		d, err := time.ParseDuration(val)
		if err != nil || d <= 0 {
			return r, fmt.Errorf("--report-window %s: %q is not a positive duration (10s, 1m)", v, val)
		}
		if scope == "" {
			r.defaults.Window = d
		} else {
			rs := r.scopes[scope]
			rs.Window = d
			r.scopes[scope] = rs
		}
	}
	return r, nil
}

// replica is a name server on its own connection.
type replica struct {
	nc  *nats.Conn
	srv *server.NameServer
}

func startReplica(ctx context.Context, conn natsconn.Config, cfg server.Config) (*replica, error) {
	nc, err := natsconn.Dial(ctx, conn)
	if err != nil {
		return nil, err
	}
	if conn.Creds != "" {
		// The nkey that the JWT names signs the answers, and the JWT goes
		// with them.
		if cfg.JWT, cfg.Key, err = rspclient.LoadCreds(conn.Creds); err != nil {
			nc.Close()
			return nil, err
		}
	}
	srv, err := server.Start(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &replica{nc: nc, srv: srv}, nil
}

func (r *replica) stop(log *slog.Logger) {
	r.srv.Stop()
	if err := r.nc.Drain(); err != nil {
		log.Warn("drain", "err", err)
	}
}

func banner(id string, o options, urls string, store *auth.Store, mon *monitorRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rsp name server %s serving scope(s) %s\nNATS client URL: %s\n", id, strings.Join(o.scopes, ", "), urls)
	if mon != nil {
		fmt.Fprintf(&b, "Pool page: %s (also /metrics, /healthz, /readyz)\n", mon.url)
	}
	if store == nil {
		fmt.Fprintf(&b, "Connect with:\n  rsp --nats %s pools\n  nats --server %s req rsp.%s.resolve.POOL ''\n", urls, urls, o.scopes[0])
	} else {
		dir, _ := filepath.Abs(o.data)
		creds := filepath.Join(dir, "auth", "creds", o.scopes[0])
		fmt.Fprintf(&b, "Operator mode: anonymous connections are refused.\n")
		fmt.Fprintf(&b, "Credentials: %s/{pe,pu,admin}.creds (more with 'rsp auth user')\n", creds)
		fmt.Fprintf(&b, "Connect with:\n  rsp --nats %s --data %s pools\n", urls, dir)
		fmt.Fprintf(&b, "  nats --server %s --creds %s req rsp.%s.resolve.POOL ''\n", urls, filepath.Join(creds, "pu.creds"), o.scopes[0])
	}
	b.WriteString("Stop with Ctrl-C.\n")
	return b.String()
}

// parseSync reads --sync: "auto" (0), "always" (-1) or a positive
// interval (embedded.Config.SyncInterval).
func parseSync(v string) (time.Duration, error) {
	switch v {
	case "auto":
		return 0, nil
	case "always":
		return -1, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--sync: %q is not auto, always or a positive duration such as 2m", v)
	}
	return d, nil
}
