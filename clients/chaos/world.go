package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/auth"
	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/server"
)

const (
	scope = events.DefaultScope
	nodes = 3
	// registerWithin bounds the setup's registration of one PE (retried
	// with backoff: the cluster may still be electing leaders).
	registerWithin = 60 * time.Second
	// parallelRegs is how many setup registrations are in flight at once.
	parallelRegs = 16
	// victimKillAfter is how long after a node's kill the victims die:
	// during the elections the kill started.
	victimKillAfter = time.Second
)

// world is the cluster, the name servers and the load of one run.
type world struct {
	cfg      *Config
	rep      *Report
	dir      string
	ownDir   bool
	store    *auth.Store
	account  string // the scope's account public key (streams live there)
	cluster  *embedded.Cluster
	nsCreds  string
	nsJWT    string
	ns       []*replica
	conns    []*nats.Conn // every connection, closed at the end
	peConns  []peConn     // the PE connections (clients) and their first node
	pes      []*pe        // live PEs, registered for the whole run
	pools    []string
	members  map[string][]string // pool → ids of its live PEs
	obs      *observer
	res      *resolutions
	stopLoad context.CancelFunc
	load     sync.WaitGroup
	victims  int       // victims registered so far (ids)
	lastEnd  time.Time // the end of the last fault's window
}

type replica struct {
	id string
	nc *nats.Conn
	ns *server.NameServer
}

type peConn struct {
	cl   *rspclient.Client
	node int
}

type pe struct {
	pool, id string
	reg      *rspclient.Registration
	mu       sync.Mutex
	endedAt  time.Time // when Done closed; zero while it runs
}

// watch records when p's registration ends.
func (p *pe) watch() {
	go func() {
		<-p.reg.Done()
		p.mu.Lock()
		p.endedAt = time.Now()
		p.mu.Unlock()
	}()
}

// ended is when p's registration ended (zero: it runs).
func (p *pe) ended() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.endedAt
}

func (w *world) progress(format string, a ...any) {
	fmt.Fprintf(w.cfg.Progress, "[%6.1fs] %s\n", time.Since(w.rep.Started).Seconds(), fmt.Sprintf(format, a...))
}

// retry runs op with exponential backoff (and jitter) until it succeeds,
// within bounds it, or ctx ends.
func retry(ctx context.Context, within time.Duration, op func() error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	b.MaxElapsedTime = within
	return backoff.Retry(op, backoff.WithContext(b, ctx))
}

// start builds the world: cluster, name servers, observer, PEs, PUs. On
// error the world returned (if any) must still be closed.
func start(ctx context.Context, cfg *Config, rep *Report) (*world, error) {
	w := &world{cfg: cfg, rep: rep, dir: cfg.Dir, members: map[string][]string{}}
	if w.dir == "" {
		d, err := os.MkdirTemp("", "rsp-chaos")
		if err != nil {
			return nil, err
		}
		w.dir, w.ownDir = d, true
	}
	var err error
	if w.store, err = auth.Init(filepath.Join(w.dir, "auth"), []string{scope}); err != nil {
		return w, err
	}
	if w.account, err = w.store.AccountPublicKey(scope); err != nil {
		return w, err
	}
	w.nsCreds = w.store.CredsPath(scope, auth.RoleNameServer)
	w.progress("starting a %d-node cluster (JetStream, operator mode) in %s", nodes, w.dir)
	w.cluster, err = embedded.StartCluster(ctx, embedded.ClusterConfig{
		Nodes: nodes, Dir: filepath.Join(w.dir, "nodes"), Configure: w.store.Configure,
		Logger: cfg.Logger, ProbeOptions: []nats.Option{natsconn.Creds(w.store.CredsPath(scope, auth.RoleAdmin))},
	})
	if err != nil {
		return w, err
	}
	rep.Nodes = nodes
	for i := range cfg.NameServers {
		r := &replica{id: fmt.Sprintf("ns-%d", i+1)}
		if err := w.startReplica(ctx, r, i%nodes); err != nil {
			return w, err
		}
		w.ns = append(w.ns, r)
	}
	w.progress("%d name-server replicas at the default settings", len(w.ns))
	if w.obs, err = w.observe(ctx); err != nil {
		return w, err
	}

	for j := range cfg.Conns {
		node := j % nodes
		nc, err := w.connect(ctx, "chaos-pe", w.cluster.URLs(node), auth.RolePE)
		if err != nil {
			return w, err
		}
		cl, err := w.client(nc, auth.RolePE)
		if err != nil {
			return w, err
		}
		w.peConns = append(w.peConns, peConn{cl: cl, node: node})
	}
	npools := (cfg.PEs + cfg.PoolSize - 1) / cfg.PoolSize
	for p := range npools {
		w.pools = append(w.pools, fmt.Sprintf("chaos-%02d", p))
	}
	for i := range cfg.PEs {
		p := &pe{pool: w.pools[i%npools], id: fmt.Sprintf("pe-%04d", i)}
		w.pes = append(w.pes, p)
		w.members[p.pool] = append(w.members[p.pool], p.id)
	}
	w.progress("registering %d PEs in %d pools over %d connections", cfg.PEs, npools, cfg.Conns)
	t0 := time.Now()
	if err := w.registerAll(ctx); err != nil {
		return w, err
	}
	rep.RegisterTook = time.Since(t0)
	w.progress("%d PEs registered in %s", cfg.PEs, rep.RegisterTook.Round(time.Millisecond))

	w.res = newResolutions(w.pools)
	loadCtx, cancel := context.WithCancel(context.Background())
	w.stopLoad = cancel
	for i := range cfg.PUs {
		nc, err := w.connect(ctx, "chaos-pu", w.cluster.URLs(i%nodes), auth.RolePU)
		if err != nil {
			return w, err
		}
		cl, err := w.client(nc, auth.RolePU)
		if err != nil {
			return w, err
		}
		w.load.Go(func() { w.resolveLoop(loadCtx, cl, i) })
	}
	w.progress("%d pool users resolving", cfg.PUs)
	return w, nil
}

// connect opens a connection as rsp programs do (reconnects for ever with
// backoff and jitter), starting on the first of urls, as a user of role.
func (w *world) connect(ctx context.Context, name, urls string, role auth.Role) (*nats.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nc, err := natsconn.Dial(ctx, natsconn.Config{
		URLs: urls, Name: name, Creds: w.store.CredsPath(scope, role), Timeout: 2 * time.Second, Retry: 10 * time.Second,
		Logger: w.cfg.Logger, Options: []nats.Option{nats.DontRandomize()},
	})
	if err != nil {
		return nil, fmt.Errorf("connect %s to %s: %w", name, urls, err)
	}
	w.conns = append(w.conns, nc)
	return nc, nil
}

func (w *world) client(nc *nats.Conn, role auth.Role) (*rspclient.Client, error) {
	return rspclient.New(nc, rspclient.WithCreds(w.store.CredsPath(scope, role)), rspclient.WithLogger(w.cfg.Logger))
}

// startReplica starts replica r (at the default settings, with JWT
// authorization as `nameserver` runs) on a new connection that starts on
// node and fails over to the others.
func (w *world) startReplica(ctx context.Context, r *replica, node int) error {
	token, kp, err := rspclient.LoadCreds(w.nsCreds)
	if err != nil {
		return err
	}
	acct, err := w.store.AccountJWT(scope)
	if err != nil {
		return err
	}
	nc, err := w.connect(ctx, "chaos-"+r.id, w.cluster.URLs(node), auth.RoleNameServer)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	ns, err := server.Start(sctx, nc, server.Config{
		ID: r.id, Scopes: []string{scope}, JWT: token, Key: kp, Logger: w.cfg.Logger.With("replica", r.id),
		Auth: &server.AuthConfig{AccountJWT: acct, Operators: []string{w.store.OperatorPublicKey()}},
	})
	if err != nil {
		nc.Close()
		return fmt.Errorf("name server %s: %w", r.id, err)
	}
	r.nc, r.ns = nc, ns
	return nil
}

// stopReplica stops r as its process would stop: beats say so, its
// connection closes.
func (r *replica) stop() {
	if r.ns != nil {
		r.ns.Stop()
		r.nc.Close()
		r.ns, r.nc = nil, nil
	}
}

// registerAll registers the live PEs, parallelRegs at a time, PE i over
// connection i mod Conns.
func (w *world) registerAll(ctx context.Context) error {
	sem := make(chan struct{}, parallelRegs)
	errs := make(chan error, len(w.pes))
	var wg sync.WaitGroup
	for i, p := range w.pes {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			reg, err := register(ctx, w.peConns[i%len(w.peConns)].cl, p.pool, p.id)
			if err == nil {
				p.reg = reg
				p.watch()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// register registers PE id in pool at the default lifetime, retrying
// transient failures with backoff for up to registerWithin.
func register(ctx context.Context, cl *rspclient.Client, pool, id string) (*rspclient.Registration, error) {
	var reg *rspclient.Registration
	err := retry(ctx, registerWithin, func() error {
		var err error
		reg, err = cl.Register(ctx, pool, rspclient.PE{ID: id, Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:9"}}})
		var ee *events.Error
		if errors.As(err, &ee) && slices.Contains([]string{events.CodeBadRequest, events.CodeForbidden, events.CodeConflict}, ee.Code) {
			return backoff.Permanent(err)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("register %s/%s: %w", pool, id, err)
	}
	return reg, nil
}

// resolveLoop resolves every pool in turn until ctx ends, recording each
// answer (full: it holds every live PE of the pool).
func (w *world) resolveLoop(ctx context.Context, cl *rspclient.Client, pu int) {
	for i := pu; ctx.Err() == nil; i++ {
		pool := w.pools[i%len(w.pools)]
		asked := time.Now()
		outage := w.res.inOutage()
		a, err := cl.Resolve(ctx, pool, events.ResolveRequest{Max: events.MaxMax})
		if ctx.Err() != nil {
			return
		}
		w.res.record(pool, asked, time.Now(), notFull(a, err, w.members[pool]), outage)
		select {
		case <-ctx.Done():
		case <-time.After(w.cfg.ResolvePause):
		}
	}
}

// notFull says what is wrong with answer a (or err) for a pool whose live
// PEs are ids: the error, or the PEs it misses; "" when it lists them all.
func notFull(a *events.ResolveAnswer, err error, ids []string) string {
	if err != nil {
		return err.Error()
	}
	got := make(map[string]bool, len(a.Elements))
	for _, e := range a.Elements {
		got[e.PEID] = true
	}
	var missing []string
	for _, id := range ids {
		if !got[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("%d live PEs missing (%s)", len(missing), strings.Join(missing[:min(len(missing), 5)], ", "))
}

func (w *world) close() {
	if w.stopLoad != nil {
		w.stopLoad()
		w.load.Wait()
	}
	for _, r := range w.ns {
		r.stop()
	}
	for _, nc := range w.conns {
		nc.Close()
	}
	if w.obs != nil {
		w.obs.close()
	}
	if w.cluster != nil {
		w.cluster.Close()
	}
	if w.ownDir {
		_ = os.RemoveAll(w.dir)
	}
}

// bucketStream is the scope bucket's stream.
func bucketStream() string { return "KV_" + events.Bucket(scope) }

// target picks the node fault f kills and says what it led.
func (w *world) target(ctx context.Context, f Fault) (int, string, error) {
	var node int
	err := retry(ctx, 20*time.Second, func() error {
		switch f {
		case FaultEventsLeader:
			node = w.cluster.StreamLeader(w.account, events.StreamName)
		case FaultBucketLeader:
			node = w.cluster.StreamLeader(w.account, bucketStream())
		case FaultMetaLeader:
			node = w.cluster.MetaLeader()
		case FaultPENode:
			node = w.leastLeading()
		}
		if node < 0 {
			return fmt.Errorf("%s: no leader elected", f)
		}
		return nil
	})
	if err != nil {
		return -1, "", err
	}
	return node, w.leads(node), nil
}

// leads says what node leads: RSP_EVENTS, the bucket, the meta group.
func (w *world) leads(node int) string {
	var l []string
	if w.cluster.StreamLeader(w.account, events.StreamName) == node {
		l = append(l, events.StreamName)
	}
	if w.cluster.StreamLeader(w.account, bucketStream()) == node {
		l = append(l, bucketStream())
	}
	if w.cluster.MetaLeader() == node {
		l = append(l, "JetStream meta")
	}
	if len(l) == 0 {
		return "led nothing"
	}
	return "led " + strings.Join(l, ", ")
}

// leastLeading is the node leading the fewest of RSP_EVENTS, the bucket
// and the meta group (every node holds PE connections).
func (w *world) leastLeading() int {
	best, bestN := -1, 4
	for i := range nodes {
		n := 0
		if w.cluster.StreamLeader(w.account, events.StreamName) == i {
			n++
		}
		if w.cluster.StreamLeader(w.account, bucketStream()) == i {
			n++
		}
		if w.cluster.MetaLeader() == i {
			n++
		}
		if n < bestN {
			best, bestN = i, n
		}
	}
	return best
}

// recover waits until every node's copy of the event stream and of the
// bucket is current and every pool answered in full since it began.
func (w *world) recover(ctx context.Context) error {
	since := time.Now()
	return retry(ctx, w.cfg.Recover, func() error {
		for i := range nodes {
			for _, s := range []string{events.StreamName, bucketStream()} {
				if !w.cluster.StreamCurrent(i, w.account, s) {
					return fmt.Errorf("%s: %s not current", w.cluster.Name(i), s)
				}
			}
		}
		if p := w.res.notFullSince(since); p != "" {
			return fmt.Errorf("pool %s: no full answer yet", p)
		}
		return nil
	})
}

// victim is a PE on its own connection, killed during a fault.
type victim struct {
	Victim
	nc *nats.Conn
	pe *pe
}

// addVictims registers cfg.Victims PEs, each on its own connection to a
// node other than avoid (-1: any), in the live PEs' pools.
func (w *world) addVictims(ctx context.Context, avoid int) ([]*victim, error) {
	var vs []*victim
	for k := range w.cfg.Victims {
		node := (avoid + 1 + k%(nodes-1)) % nodes
		if avoid < 0 {
			node = k % nodes
		}
		w.victims++
		v := &victim{Victim: Victim{Pool: w.pools[w.victims%len(w.pools)], PEID: fmt.Sprintf("victim-%03d", w.victims), Node: w.cluster.Name(node)}}
		nc, err := w.connect(ctx, "chaos-"+v.PEID, w.cluster.URL(node), auth.RolePE)
		if err != nil {
			return nil, err
		}
		cl, err := w.client(nc, auth.RolePE)
		if err != nil {
			return nil, err
		}
		v.pe = &pe{pool: v.Pool, id: v.PEID}
		if v.pe.reg, err = register(ctx, cl, v.Pool, v.PEID); err != nil {
			return nil, err
		}
		v.pe.watch()
		v.nc = nc
		vs = append(vs, v)
	}
	return vs, nil
}

// kill ends the victims as a crash of their processes would: no
// deregistration, their connections closed.
func kill(vs []*victim) {
	for _, v := range vs {
		v.KilledAt = time.Now() // before: its registration may end at once
		v.nc.Close()
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// run injects fault f under the load and measures it.
func (w *world) run(ctx context.Context, f Fault) (*Result, error) {
	res := &Result{Fault: f, Recovered: true}
	if err := w.recover(ctx); err != nil {
		res.Recovered, res.RecoverErr = false, err.Error()
		w.progress("%s: not every node current and every pool answering in full within %s before it: %v", f, w.cfg.Recover, err)
	}
	node := -1
	if f != FaultNameServers && f != FaultNone {
		var err error
		if node, res.Detail, err = w.target(ctx, f); err != nil {
			return res, err
		}
		res.Node = w.cluster.Name(node)
	}
	vs, err := w.addVictims(ctx, node)
	if err != nil {
		return res, err
	}
	res.Start = time.Now()
	w.res.begin(res.Start)
	switch f {
	case FaultNone:
		w.progress("no fault: the load alone for %s", w.cfg.Settle)
		if err := sleep(ctx, victimKillAfter); err != nil {
			return res, err
		}
		kill(vs)
		w.progress("%s: %d PEs killed", f, len(vs))
	case FaultNameServers:
		w.progress("%s: stopping all %d name-server replicas for %s", f, len(w.ns), w.cfg.Outage)
		w.res.setOutage(true)
		for _, r := range w.ns {
			r.stop()
		}
		if err := sleep(ctx, w.cfg.Outage/2); err != nil {
			return res, err
		}
		kill(vs)
		w.progress("%s: %d PEs killed while no name server runs", f, len(vs))
		if err := sleep(ctx, w.cfg.Outage-time.Since(res.Start)); err != nil {
			return res, err
		}
		for i, r := range w.ns {
			if err := w.startReplica(ctx, r, i%nodes); err != nil {
				return res, err
			}
		}
		w.res.setOutage(false)
		w.progress("%s: name servers started again after %s", f, time.Since(res.Start).Round(time.Millisecond))
	default:
		w.progress("%s: kill -9 of %s (%s)", f, res.Node, res.Detail)
		w.cluster.Kill(node)
		if err := sleep(ctx, victimKillAfter); err != nil {
			return res, err
		}
		kill(vs)
		w.progress("%s: %d PEs killed (connections on the other nodes)", f, len(vs))
		if err := sleep(ctx, w.cfg.Down-time.Since(res.Start)); err != nil {
			return res, err
		}
		t := time.Now()
		if err := w.cluster.Restart(ctx, node); err != nil {
			return res, fmt.Errorf("restart %s: %w", res.Node, err)
		}
		w.progress("%s: %s restarted after %s down, cluster ready %s later", f, res.Node, t.Sub(res.Start).Round(time.Millisecond), time.Since(t).Round(time.Millisecond))
		res.Detail += fmt.Sprintf("; down %s", t.Sub(res.Start).Round(100*time.Millisecond))
	}
	if err := sleep(ctx, w.cfg.Settle); err != nil {
		return res, err
	}
	end := time.Now()
	res.Took = end.Sub(res.Start)
	w.collect(res, vs, end)
	w.progress("%s: %s", f, res.Summary())
	return res, nil
}

// collect fills res with what happened from res.Start until end.
func (w *world) collect(res *Result, vs []*victim, end time.Time) {
	res.Resolutions, res.Failed, res.FailedOutage, res.LongestGap, res.Slowest, res.FailedWhy = w.res.window(end)
	victimKeys := map[string]*victim{}
	for _, v := range vs {
		victimKeys[events.Key(v.Pool, v.PEID)] = v
	}
	live := map[string]bool{}
	for _, p := range w.pes {
		live[events.Key(p.pool, p.id)] = true
	}
	for _, rm := range w.obs.since(res.Start) {
		if rm.At.After(end) {
			continue
		}
		if rm.Published {
			res.Published++
		}
		if rm.InBucket {
			res.InBucket++
		}
		key := events.Key(rm.Pool, rm.PEID)
		switch {
		case live[key]:
			res.Lost = append(res.Lost, rm)
		case victimKeys[key] != nil:
			v := victimKeys[key]
			switch {
			case v.KilledAt.IsZero() || rm.At.Before(v.KilledAt):
				// Still alive then: lost like any live PE.
				res.Lost = append(res.Lost, rm)
				v.LostAlive = true
			case !v.Removed:
				v.Removed, v.Reason, v.After, v.Published = true, rm.Reason, rm.At.Sub(v.KilledAt), rm.Published
			}
		}
		// The change may trail the bucket's marker by a moment.
		if rm.InBucket && !rm.Published && rm.At.Before(end.Add(-2*time.Second)) {
			res.Unpublished = append(res.Unpublished, rm)
		}
	}
	for _, v := range vs {
		if at := v.pe.ended(); !at.IsZero() && (v.KilledAt.IsZero() || at.Before(v.KilledAt)) {
			res.Ended = append(res.Ended, fmt.Sprintf("%s/%s (to be killed) %+.1f s: %v", v.Pool, v.PEID, at.Sub(res.Start).Seconds(), v.pe.reg.Err()))
		}
		res.Victims = append(res.Victims, v.Victim)
	}
	for _, p := range w.pes {
		if at := p.ended(); !at.IsZero() && at.After(w.lastEnd) && !at.After(end) {
			res.Ended = append(res.Ended, fmt.Sprintf("%s/%s %+.1f s: %v", p.pool, p.id, at.Sub(res.Start).Seconds(), p.reg.Err()))
		}
	}
	w.lastEnd = end
	slices.SortFunc(res.Lost, func(a, b Removal) int { return a.At.Compare(b.At) })
}
