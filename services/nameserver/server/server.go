package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rserpool/rsp/events"
)

// Config configures one name-server replica.
type Config struct {
	// Scopes served; default just "default".
	Scopes []string
	// ID names this replica (the home name server of the PEs it accepts);
	// default host name plus a random suffix.
	ID string
	// Key signs resolution answers; default a fresh user nkey.
	Key nkeys.KeyPair
	// JWT is this replica's own NATS user JWT, whose subject is Key (the
	// JWT of the .creds file the replica connects with). Answers carry it
	// in Rsp-Jwt, so that clients can tell a name server of their account
	// (tag rsp-role:nameserver) from anyone else. Required with Auth.
	JWT string
	// Auth, when set, turns on JWT authorization of events: the account
	// is the issuer account of JWT, and its account JWT is kept current
	// from the bucket rsp_auth (see AuthConfig). Without it only the
	// signatures of events are checked (insecure mode).
	Auth *AuthConfig
	// Replicas of the stream RSP_EVENTS and of the buckets. 0 (auto): a
	// stream or bucket that exists keeps its replicas, and one that is
	// created gets min(MaxAutoReplicas, the JetStream servers of the
	// cluster) — R1 on a server that is not clustered, R3 on a cluster of
	// three or more. Set, it is the replicas also of an existing stream and
	// buckets (JetStream scales them). See the package doc, "Replication".
	Replicas int
	// ClockSkew allowed between an event's time and this replica's clock.
	ClockSkew time.Duration
	// TombstoneLife is how long the purge marker of a removal keeps the PE
	// id's owner and last seq (events.Tombstone); default
	// events.TombstoneLife(ClockSkew), 2 min. Shorter than 2 × ClockSkew,
	// a replayed event may bring a removed PE back: only tests set it.
	TombstoneLife time.Duration
	// AckWait is how long an event may be in work at one replica before
	// another replica gets it; default 5 s.
	AckWait time.Duration
	// StartTimeout bounds setting up and loading the name space; default 30 s.
	StartTimeout time.Duration

	// DisconnectGrace is how long a PE whose NATS connection closed may
	// take to register again over a new one before it is taken out
	// (reason "disconnected"); default 250 ms, negative turns disconnect
	// detection off. It needs a JWT identity (operator mode): see the
	// package doc.
	DisconnectGrace time.Duration
	// MaxBadPEReports is how many distinct reporters must report a PE
	// within ReportWindow to take it out (reason "failed"); default 3.
	MaxBadPEReports int
	// ReportWindow is how long a failure report counts; default 10 s.
	ReportWindow time.Duration
	// ScopeReports overrides MaxBadPEReports and ReportWindow per scope;
	// zero fields keep the defaults above.
	ScopeReports map[string]ReportSettings
	// NoChecks turns off the replica's own check of a reported PE (a
	// request to its nats transport, a TCP connect to its tcp transport).
	NoChecks bool
	// CheckTimeout bounds one check of a transport; default 500 ms.
	CheckTimeout time.Duration
	// MaxPEsPerSigner bounds the PEs one signer (a credential's key) may
	// own in a scope: a registration of a new PE beyond it is refused
	// forbidden; default DefaultMaxPEsPerSigner, negative: no limit.
	MaxPEsPerSigner int
	// NewPEsPerSecond bounds how fast one signer adds new PEs to a scope
	// (renewals are not counted): beyond it, with a burst of two
	// seconds' worth, a registration is refused unavailable (the client
	// retries with backoff); default DefaultNewPEsPerSecond, negative: no
	// limit.
	NewPEsPerSecond float64
	// Logger; default slog.Default(). Lines about an event carry its
	// event_id, event_seq, pool and pe_id.
	Logger *slog.Logger
	// Metrics the replica adds to; default metrics registered nowhere.
	// Replicas of one process share one (NewMetrics).
	Metrics *Metrics
}

func (c *Config) defaults() error {
	if len(c.Scopes) == 0 {
		c.Scopes = []string{events.DefaultScope}
	}
	for _, s := range c.Scopes {
		if err := events.CheckScope(s); err != nil {
			return err
		}
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = subjectToken(host) + "-" + nuid.Next()[16:]
	}
	if c.Key == nil && c.JWT == "" {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return err
		}
		c.Key = kp
	}
	if c.JWT != "" && c.Key == nil {
		return events.Errf("Key", "is required with JWT: it is the nkey the JWT names")
	}
	if c.Auth != nil && c.Auth.JWTCacheSize == 0 {
		a := *c.Auth
		a.JWTCacheSize = 4096
		c.Auth = &a
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return events.Errf("Replicas", "%d is not 0 (auto) or 1 to 5", c.Replicas)
	}
	if c.ClockSkew == 0 {
		c.ClockSkew = events.DefaultClockSkew
	}
	if c.TombstoneLife < 0 {
		return events.Errf("TombstoneLife", "%s is negative", c.TombstoneLife)
	}
	if c.TombstoneLife == 0 {
		c.TombstoneLife = events.TombstoneLife(c.ClockSkew)
	}
	if c.AckWait == 0 {
		c.AckWait = 5 * time.Second
	}
	if c.MaxPEsPerSigner == 0 {
		c.MaxPEsPerSigner = DefaultMaxPEsPerSigner
	}
	if c.NewPEsPerSecond == 0 {
		c.NewPEsPerSecond = DefaultNewPEsPerSecond
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Logger = eventLogger(c.Logger)
	if c.Metrics == nil {
		c.Metrics, _ = NewMetrics(nil)
	}
	if c.DisconnectGrace == 0 {
		c.DisconnectGrace = DefaultDisconnectGrace
	}
	if c.MaxBadPEReports == 0 {
		c.MaxBadPEReports = DefaultMaxBadPEReports
	}
	if c.ReportWindow == 0 {
		c.ReportWindow = DefaultReportWindow
	}
	if c.MaxBadPEReports < 0 || c.ReportWindow < 0 {
		return events.Errf("MaxBadPEReports", "and ReportWindow must not be negative")
	}
	for sc, rs := range c.ScopeReports {
		if !slices.Contains(c.Scopes, sc) {
			return events.Errf("ScopeReports", "scope %q is not served (Scopes)", sc)
		}
		if rs.MaxBadPEReports < 0 || rs.Window < 0 {
			return events.Errf("ScopeReports", "scope %s: MaxBadPEReports and Window must not be negative", sc)
		}
	}
	for _, sc := range c.Scopes {
		// rsp_<a>_reports is both scope a's reports bucket and scope
		// a_reports's name space: in one account they cannot both be.
		if base, ok := strings.CutSuffix(sc, reportsSuffix); ok && slices.Contains(c.Scopes, base) {
			return events.Errf("Scopes", "%s and %s cannot be served together: bucket %s would be both %s's name space and %s's failure reports",
				base, sc, events.Bucket(sc), sc, base)
		}
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = DefaultCheckTimeout
	}
	return nil
}

// Defaults of failure detection.
const (
	DefaultDisconnectGrace = 250 * time.Millisecond
	DefaultMaxBadPEReports = 3
	DefaultReportWindow    = 10 * time.Second
	DefaultCheckTimeout    = 500 * time.Millisecond
)

const reportsSuffix = "_reports"

// ReportSettings are the failure-report settings of one scope.
type ReportSettings struct {
	// MaxBadPEReports is how many distinct reporters take a PE out.
	MaxBadPEReports int
	// Window is how long a report counts.
	Window time.Duration
}

// reportSettings are the settings of scope, defaults filled in.
func (c *Config) reportSettings(scope string) ReportSettings {
	rs := c.ScopeReports[scope]
	if rs.MaxBadPEReports == 0 {
		rs.MaxBadPEReports = c.MaxBadPEReports
	}
	if rs.Window == 0 {
		rs.Window = c.ReportWindow
	}
	return rs
}

// NameServer is a running replica. Stop it with Stop.
type NameServer struct {
	cfg     Config
	ident   *identity // from Config.JWT; nil without
	nc      *nats.Conn
	cancel  context.CancelFunc
	views   map[string]*view
	started time.Time     // when it began to serve; zero if it never did
	stopped chan struct{} // closed by Stop
	beatMu  sync.Mutex    // one beat at a time: none after the last

	stopOnce  sync.Once
	subs      []*nats.Subscription
	consumers []*supervised
	wg        sync.WaitGroup
	checks    *checker
	// disconnects takes out the PEs whose connection closed; nil when
	// disconnect detection is off.
	disconnects *disconnects
}

// Names of the durable consumers shared by all replicas.
const (
	eventsConsumerPrefix = "rsp-nameservers-"
	legacyExpiryConsumer = "rsp-expiry"
	eventsRetention      = 24 * time.Hour
	duplicatesWindow     = 2 * time.Minute
	markerTTL            = time.Minute
	// maxEventSize bounds a message of RSP_EVENTS: the largest valid event
	// (an element of events.MaxElementBytes, a JWT, headers) is far below
	// it; junk above it is refused before it is stored.
	maxEventSize = 64 << 10
)

// Start sets up the stream and buckets if missing, loads the name space of
// every scope, and starts serving. It returns once the replica answers.
func Start(ctx context.Context, nc *nats.Conn, cfg Config) (*NameServer, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	ident, err := checkIdentity(&cfg)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	n := &NameServer{cfg: cfg, ident: ident, nc: nc, cancel: cancel, views: map[string]*view{}, stopped: make(chan struct{}),
		checks: newChecker(nc, cfg.CheckTimeout, cfg.Logger)}
	setupCtx, setupCancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer setupCancel()
	if err := n.start(setupCtx, runCtx, nc, js); err != nil {
		n.Stop()
		return nil, err
	}
	cfg.Metrics.add(n)
	n.started = time.Now().UTC()
	n.wg.Go(func() { n.beat(runCtx) })
	cfg.Logger.Info("name server serving", "id", cfg.ID, "scopes", cfg.Scopes, "key", n.PublicKey(), "jwt_auth", cfg.Auth != nil,
		"disconnect_detection", n.disconnects != nil)
	return n, nil
}

func (n *NameServer) start(ctx, runCtx context.Context, nc *nats.Conn, js jetstream.JetStream) error {
	cfg := n.cfg
	signer, err := events.NewSigner(cfg.Key)
	if err != nil {
		return fmt.Errorf("answer key: %w", err)
	}
	stream, replicas, err := n.setupStream(ctx, nc, js)
	if err != nil {
		return err
	}
	var authKV jetstream.KeyValue
	if cfg.Auth != nil {
		if authKV, err = n.ensureBucket(ctx, js, jetstream.KeyValueConfig{
			Bucket: AuthBucket, History: 1, Storage: jetstream.FileStorage, Replicas: replicas,
			Description: "rsp: the current account JWT of each scope (key = scope)",
		}); err != nil {
			return err
		}
	}
	registrars := map[string]*registrar{}
	for _, scope := range cfg.Scopes {
		log := cfg.Logger.With("scope", scope)
		var trust *scopeTrust
		if authKV != nil {
			if trust, err = n.startTrust(ctx, runCtx, authKV, scope, log); err != nil {
				return fmt.Errorf("scope %s: %w", scope, err)
			}
			if n.ident != nil && cfg.DisconnectGrace > 0 && !importsDisconnects(trust.cur.Load(), n.ident.account) {
				log.Warn("the account JWT does not import its disconnect advisories from the system account: a crashed PE leaves only when its lifetime ends (run 'rsp auth init' to upgrade the accounts)",
					"subject", events.DisconnectSubject(n.ident.account))
			}
		}
		kv, err := n.ensureBucket(ctx, js, jetstream.KeyValueConfig{
			Bucket: events.Bucket(scope), History: 1, Storage: jetstream.FileStorage, Replicas: replicas,
			LimitMarkerTTL: markerTTL,
		})
		if err != nil {
			return err
		}
		v := newView(scope, log)
		n.views[scope] = v
		ready := make(chan struct{})
		watchErr := make(chan error, 1)
		n.wg.Go(func() { watchErr <- v.run(runCtx, kv, ready) })
		select {
		case <-ready:
		case err := <-watchErr:
			return fmt.Errorf("scope %s: loading the name space: %w", scope, err)
		case <-ctx.Done():
			return fmt.Errorf("scope %s: loading the name space: %w", scope, ctx.Err())
		}

		rkv, err := n.ensureBucket(ctx, js, jetstream.KeyValueConfig{
			Bucket: events.ReportsBucket(scope), History: 1, Storage: jetstream.FileStorage, Replicas: replicas,
			LimitMarkerTTL: time.Second,
			Description:    "rsp: failure reports of scope " + scope + " (key <pool>.<pe_id>, value reporter → time)",
		})
		if err != nil {
			return err
		}
		if cp, _, ok := readCheckpoint(ctx, rkv); ok {
			v.adopt(cp) // before the first resolution (checkpoint.go)
		}
		reg := &registrar{scope: scope, home: cfg.ID, nc: nc, js: js, kv: kv, view: v, skew: cfg.ClockSkew, tombLife: cfg.TombstoneLife, trust: trust, log: log, now: time.Now,
			metrics: cfg.Metrics,
			quotas:  newQuotas(cfg.MaxPEsPerSigner, cfg.NewPEsPerSecond),
			reports: rkv, rs: cfg.reportSettings(scope), checks: n.checks, noChecks: cfg.NoChecks, checked: map[string]time.Time{}}
		registrars[scope] = reg
		x := &expiry{scope: scope, js: js, nc: nc, durable: eventsConsumerPrefix + scope, bucket: kv.Bucket(), view: v, reg: reg, log: log, metrics: cfg.Metrics}
		reg.expiry = x // before the first event: deregister asks it
		eventsCfg := jetstream.ConsumerConfig{
			Durable: eventsConsumerPrefix + scope, FilterSubjects: events.ScopeEventSubjects(scope),
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: cfg.AckWait, MaxDeliver: -1,
		}
		if err := n.consume(ctx, runCtx, nc, eventsCfg.Durable, log, func(ctx context.Context) (jetstream.Consumer, error) {
			return retryJS(ctx, log, "events consumer", nil, func(ctx context.Context) (jetstream.Consumer, error) {
				return stream.CreateOrUpdateConsumer(ctx, eventsCfg)
			})
		}, func(ctx context.Context, m jetstream.Msg) error {
			meta, err := m.Metadata()
			if err != nil {
				return err
			}
			return reg.handle(ctx, &nats.Msg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()}, meta.Sequence.Stream, meta.Timestamp)
		}, func(m jetstream.Msg) string {
			// One lane for all events of a PE (register, deregister, reports), in order.
			key, _ := eventKey(m.Subject(), m.Data())
			return key
		}); err != nil {
			return fmt.Errorf("scope %s: events consumer: %w", scope, err)
		}

		res := &resolver{view: v, key: signer, log: log,
			took: cfg.Metrics.resolveSeconds.WithLabelValues(scope), errors: cfg.Metrics.resolveErrors.MustCurryWith(prometheus.Labels{"scope": scope})}
		if n.ident != nil {
			res.jwt = n.ident.jwt
		}
		// nats.go runs each subscription's handler on its own goroutine:
		// one subscription per core lets answers be signed in parallel.
		for range runtime.GOMAXPROCS(0) {
			sub, err := nc.QueueSubscribe(events.Subject(scope, events.KindResolve, "*"), events.QueueGroup, res.handle)
			if err != nil {
				return fmt.Errorf("scope %s: resolve subscription: %w", scope, err)
			}
			_ = sub.SetPendingLimits(1<<20, 256<<20)
			n.subs = append(n.subs, sub)
		}

		rd := &reader{view: v, kvStream: reg.kvStream, key: signer, jwt: res.jwt, log: log}
		for subject, handle := range map[string]nats.MsgHandler{
			events.Subject(scope, events.KindRead, "*"): rd.handleRead,
			events.PoolsSubject(scope):                  rd.handlePools,
		} {
			sub, err := nc.QueueSubscribe(subject, events.QueueGroup, handle)
			if err != nil {
				return fmt.Errorf("scope %s: read subscription: %w", scope, err)
			}
			n.subs = append(n.subs, sub)
		}

		n.wg.Go(func() { x.run(runCtx) })
		// Before names servers expired PEs themselves, the store's TTL
		// did, and a consumer read its markers; it is of no use now.
		if err := js.DeleteConsumer(ctx, "KV_"+kv.Bucket(), legacyExpiryConsumer); err == nil {
			log.Info("deleted the consumer of an older version", "consumer", legacyExpiryConsumer)
		}
	}
	if n.ident != nil && cfg.DisconnectGrace > 0 {
		return n.startDisconnects(runCtx, nc, registrars)
	}
	cfg.Logger.Info("disconnect detection off: a PE that dies leaves when its lifetime ends",
		"why", map[bool]string{true: "no JWT identity (insecure mode)", false: "DisconnectGrace < 0"}[n.ident == nil])
	return nil
}

// ID is this replica's id.
func (n *NameServer) ID() string { return n.cfg.ID }

// JWT is this replica's user JWT (Config.JWT), carried by its answers.
func (n *NameServer) JWT() string { return n.cfg.JWT }

// PublicKey is the nkey that signs this replica's answers.
func (n *NameServer) PublicKey() string {
	pub, _ := n.cfg.Key.PublicKey()
	return pub
}

// Stop stops taking requests and events, lets the ones in work finish, and
// returns. Events not yet acknowledged go to the other replicas.
func (n *NameServer) Stop() {
	n.stopOnce.Do(func() {
		close(n.stopped)
		n.cfg.Metrics.remove(n)
		if !n.started.IsZero() && n.nc.IsConnected() {
			n.publishBeats(true) // monitors see it go at once
		}
		for _, s := range n.subs {
			_ = s.Drain()
		}
		var drained sync.WaitGroup
		for _, s := range n.consumers {
			drained.Go(func() { s.drain(n.cfg.AckWait) })
		}
		drained.Wait()
		n.cancel()
		n.checks.close()
		n.wg.Wait()
	})
}
