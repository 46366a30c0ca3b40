package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// waitForRoom makes an async publish wait, up to a minute, for room among
// the publishes not yet acknowledged: a store that syncs every write (the
// embedded default) acknowledges slower than a benchmark publishes.
var waitForRoom = jetstream.WithStallWait(time.Minute)

// Config is what to measure and for how long.
type Config struct {
	Duration time.Duration // measured window of each throughput measurement
	Warmup   time.Duration // unmeasured run before each one
	Pools    []int         // pool sizes (PEs)
	Clients  []int         // concurrent requesters
	Policies []string      // pool policies
	MaxPEs   int           // PEs asked for per resolution (default 3)
	Regs     int           // registrations for the registrations/s figure
	Visible  int           // samples of register-to-visible latency
	Progress io.Writer     // progress lines; nil: none

	// change notifications and memory (memory.go, changes.go)
	Changes int // samples of change-notification latency (adds and updates each)
	MemPEs  int // PEs loaded for the memory-per-PE figure, in MemPEs/10 pools
}

func (c *Config) defaults() {
	if c.MaxPEs == 0 {
		c.MaxPEs = 3
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// ResolveRow is one (pool size, policy, clients) cell: rsp and the echo
// baseline, measured one after the other on the same server.
type ResolveRow struct {
	PEs       int
	Policy    string
	Clients   int
	Payload   int // answer bytes, the same for both
	RSP, Echo Stats
}

// RegisterResult is registrations per second and register-to-visible
// latency, each with its JetStream baseline.
type RegisterResult struct {
	Regs, Base         Stats // async signed registrations vs. async JetStream publishes of the same messages
	Visible, VisibleJS Stats // register until watcher+resolution see it vs. JetStream publish round trip
}

// Machine describes where a run happened.
type Machine struct {
	CPU        string
	Cores      int
	GOMAXPROCS int
	Go         string
	OS         string
}

// Report is the result of a run.
type Report struct {
	Config   Config
	Machine  Machine
	Started  time.Time
	Took     time.Duration
	Resolve  []ResolveRow
	Register *RegisterResult
	Etcd     string      // why the etcd column is missing
	EtcdRun  *EtcdResult // the etcd column (etcd.go); nil when missing
	// change notifications and memory (memory.go, changes.go)
	Changes *ChangesResult
	Memory  *MemoryResult
}

// ThisMachine reads cores, GOMAXPROCS, Go version and the CPU model.
func ThisMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version(),
		OS: runtime.GOOS + "/" + runtime.GOARCH, CPU: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// Run starts an embedded NATS server and a name server on loopback and
// measures everything cfg asks for.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	rep := &Report{Config: cfg, Machine: ThisMachine(), Started: time.Now()}
	progress := func(format string, a ...any) {
		fmt.Fprintf(cfg.Progress, "[%6.1fs] %s\n", time.Since(rep.Started).Seconds(), fmt.Sprintf(format, a...))
	}
	dir, err := os.MkdirTemp("", "rsp-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: dir})
	if err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	progress("nats %s", s.ClientURL())

	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	connect := func(name string) (*nats.Conn, error) {
		nc, err := nats.Connect(s.ClientURL(), nats.Name(name), nats.Timeout(5*time.Second))
		if err == nil {
			conns = append(conns, nc)
		}
		return nc, err
	}
	nsConn, err := connect("bench-nameserver")
	if err != nil {
		return nil, err
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ns, err := server.Start(startCtx, nsConn, server.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		// One signer fills every pool: the quotas of a signer are policy, not
		// what the bench measures.
		MaxPEsPerSigner: -1, NewPEsPerSecond: -1})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("start name server: %w", err)
	}
	defer ns.Stop()
	setup, err := connect("bench-setup")
	if err != nil {
		return nil, err
	}
	echoConn, err := connect("bench-echo") // the echo responder: its own connection, like the name server
	if err != nil {
		return nil, err
	}
	requester, err := connect("bench-requester") // every requester shares it
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}

	for _, size := range cfg.Pools {
		for _, pol := range cfg.Policies {
			pool := fmt.Sprintf("p%d-%s", size, strings.ReplaceAll(pol, "_", "-"))
			progress("filling %s with %d PEs", pool, size)
			if err := fillPool(ctx, setup, kp, pool, pol, size); err != nil {
				return nil, err
			}
			q := events.Marshal(events.ResolveRequest{Max: cfg.MaxPEs})
			subject := events.Subject(events.DefaultScope, events.KindResolve, pool)
			sample, err := requester.Request(subject, q, 5*time.Second)
			if err != nil {
				return nil, fmt.Errorf("resolve %s: %w", pool, err)
			}
			answer := sample.Data
			echoSubject := "bench.echo." + pool
			sub, err := echoConn.Subscribe(echoSubject, func(m *nats.Msg) { _ = m.Respond(answer) })
			if err != nil {
				return nil, err
			}
			if err := echoConn.Flush(); err != nil {
				return nil, err
			}
			for _, n := range cfg.Clients {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				row := ResolveRow{PEs: size, Policy: pol, Clients: n, Payload: len(answer)}
				row.Echo = load(requester, echoSubject, q, n, cfg.Warmup, cfg.Duration)
				row.RSP = load(requester, subject, q, n, cfg.Warmup, cfg.Duration)
				rep.Resolve = append(rep.Resolve, row)
				progress("resolve %3d PEs %-11s %2d clients: rsp %8.0f/s p99 %s, echo %8.0f/s p99 %s, ratio %.2f, errors %d/%d",
					size, pol, n, row.RSP.PerSec(), row.RSP.P99, row.Echo.PerSec(), row.Echo.P99,
					Ratio(row.RSP.PerSec(), row.Echo.PerSec()), row.RSP.Errors, row.Echo.Errors)
			}
			_ = sub.Unsubscribe()
		}
	}

	if cfg.Regs > 0 || cfg.Visible > 0 {
		rr, err := measureRegister(ctx, cfg, setup, kp, progress)
		if err != nil {
			return nil, err
		}
		rep.Register = rr
	}
	// change notifications and memory (memory.go, changes.go)
	if cfg.Changes > 0 {
		sub, err := connect("bench-watcher")
		if err != nil {
			return nil, err
		}
		if rep.Changes, err = measureChanges(ctx, setup, sub, cfg.Changes, progress); err != nil {
			return nil, err
		}
	}
	if cfg.MemPEs > 0 {
		if rep.Memory, err = measureMemory(ctx, setup, connect, cfg.MemPEs, progress); err != nil {
			return nil, err
		}
	}
	// etcd column (etcd.go): same pools, policies and clients as above
	if rep.EtcdRun, rep.Etcd = runEtcd(ctx, cfg, progress); rep.EtcdRun == nil {
		progress("%s", rep.Etcd)
	}
	rep.Took = time.Since(rep.Started)
	return rep, nil
}

// registration is a signed registration of PE id in pool with policy pol.
func registration(kp nkeys.KeyPair, pool, pol, id string, load float64) (*nats.Msg, error) {
	reg := events.Registration{
		PEID: id, Seq: 1, Time: time.Now().UTC(), LifetimeMS: 3600_000,
		Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7001"}},
		Policy:     events.PolicyParams{Name: pol, Load: load},
	}
	m := nats.NewMsg(events.Subject(events.DefaultScope, events.KindRegister, pool))
	m.Data = events.Marshal(reg)
	if err := events.SignEvent(m, kp); err != nil {
		return nil, err
	}
	m.Header.Set(events.HeaderMsgID, events.MsgID(reg.PEID, reg.Seq))
	return m, nil
}

// fillPool registers n PEs and waits until a resolution shows all of them.
func fillPool(ctx context.Context, nc *nats.Conn, kp nkeys.KeyPair, pool, pol string, n int) error {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		return err
	}
	for i := range n {
		m, err := registration(kp, pool, pol, fmt.Sprintf("%s-pe-%04d", pool, i), float64(i%10)/10)
		if err != nil {
			return err
		}
		if _, err := js.PublishMsgAsync(m, waitForRoom); err != nil {
			return err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		return fmt.Errorf("%s: registrations not stored within 60s", pool)
	}
	deadline := time.Now().Add(60 * time.Second)
	q := events.Marshal(events.ResolveRequest{Max: 1})
	for {
		m, err := nc.Request(events.Subject(events.DefaultScope, events.KindResolve, pool), q, 5*time.Second)
		if err == nil {
			var a events.ResolveAnswer
			if json.Unmarshal(m.Data, &a) == nil && a.Error == nil && a.Revision >= uint64(n) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: pool not filled within 60s", pool)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loadOps runs clients goroutines, each calling its own op (made by mk)
// one call after the other: for warmup (not recorded), then for d (every
// latency recorded). An op that returns an error counts as an error.
func loadOps(clients int, warmup, d time.Duration, mk func() func() error) Stats {
	ops := make([]func() error, clients)
	for i := range ops {
		ops[i] = mk()
	}
	run := func(d time.Duration, record bool) ([]time.Duration, int, time.Duration) {
		var wg sync.WaitGroup
		var errs atomic.Int64
		per := make([][]time.Duration, clients)
		start := time.Now()
		end := start.Add(d)
		for c := range clients {
			var lat []time.Duration
			if record {
				lat = make([]time.Duration, 0, 1<<16)
			}
			op := ops[c]
			wg.Go(func() {
				for {
					t0 := time.Now()
					if !t0.Before(end) {
						break
					}
					err := op()
					el := time.Since(t0)
					if err != nil {
						errs.Add(1)
						continue
					}
					if record {
						lat = append(lat, el)
					}
				}
				per[c] = lat
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		var all []time.Duration
		for _, l := range per {
			all = append(all, l...)
		}
		return all, int(errs.Load()), elapsed
	}
	if warmup > 0 {
		run(warmup, false)
	}
	all, errs, elapsed := run(d, true)
	return Summarize(all, errs, elapsed)
}

// load runs clients goroutines, each sending request q to subject over nc
// one after the other: for warmup (not recorded), then for d (every
// latency recorded). An answer that is a NATS error or carries an rsp
// error counts as an error.
func load(nc *nats.Conn, subject string, q []byte, clients int, warmup, d time.Duration) Stats {
	return loadOps(clients, warmup, d, func() func() error {
		return func() error {
			m, err := nc.Request(subject, q, 5*time.Second)
			if err == nil && isErrorAnswer(m.Data) {
				err = errors.New("error answer")
			}
			return err
		}
	})
}

// isErrorAnswer is whether a resolution answer carries an error (a short
// check: the echo replays a good answer, so it never does).
func isErrorAnswer(b []byte) bool {
	return len(b) < 20 || bytes.Contains(b, []byte(`"error":`))
}

// measureRegister measures registrations per second (async signed
// registrations until every outcome has arrived) next to async JetStream
// publishes of the same messages to a plain stream, and register-to-visible
// latency next to a JetStream publish round trip.
func measureRegister(ctx context.Context, cfg Config, nc *nats.Conn, kp nkeys.KeyPair, progress func(string, ...any)) (*RegisterResult, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		return nil, err
	}
	// The baseline stream: file storage and one replica, like RSP_EVENTS on one server.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.js.>"},
		Storage: jetstream.FileStorage, Replicas: 1}); err != nil {
		return nil, fmt.Errorf("baseline stream: %w", err)
	}
	rr := &RegisterResult{}
	if cfg.Regs > 0 {
		progress("registering %d PEs (async, signed) and publishing %d baseline messages", cfg.Regs, cfg.Regs)
		msgs := make([]*nats.Msg, cfg.Regs)
		for i := range msgs {
			if msgs[i], err = registration(kp, "reg", "round_robin", fmt.Sprintf("r-%d", i), 0); err != nil {
				return nil, err
			}
		}
		// baseline first: the same messages (headers and body) to a plain stream
		base := make([]*nats.Msg, len(msgs))
		for i, m := range msgs {
			base[i] = &nats.Msg{Subject: "bench.js.reg", Header: m.Header, Data: m.Data}
		}
		start := time.Now()
		baseErrs := 0
		for _, m := range base {
			if _, err := js.PublishMsgAsync(m, waitForRoom); err != nil {
				baseErrs++
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(60 * time.Second):
			return nil, errors.New("baseline publishes not acknowledged within 60s")
		}
		rr.Base = Stats{Ops: len(base) - baseErrs, Errors: baseErrs, Elapsed: time.Since(start)}

		var outcomes, refused atomic.Int64
		done := make(chan struct{})
		sub, err := nc.Subscribe(events.OutcomeSubject(events.DefaultScope, "reg", "*"), func(m *nats.Msg) {
			var out events.Outcome
			if json.Unmarshal(m.Data, &out) == nil && !out.Accepted {
				refused.Add(1)
			}
			if outcomes.Add(1) == int64(len(msgs)) {
				close(done)
			}
		})
		if err != nil {
			return nil, err
		}
		if err := nc.Flush(); err != nil {
			return nil, err
		}
		start = time.Now()
		pubErrs := 0
		for _, m := range msgs {
			if _, err := js.PublishMsgAsync(m, waitForRoom); err != nil {
				pubErrs++
			}
		}
		timedOut := false
		select {
		case <-done:
		case <-time.After(120 * time.Second):
			timedOut = true
		}
		el := time.Since(start)
		_ = sub.Unsubscribe()
		got := int(outcomes.Load())
		errs := int(refused.Load()) + pubErrs
		if timedOut {
			errs += len(msgs) - got
		}
		rr.Regs = Stats{Ops: got - int(refused.Load()), Errors: errs, Elapsed: el}
		progress("registrations: rsp %.0f/s, jetstream %.0f/s, errors %d/%d", rr.Regs.PerSec(), rr.Base.PerSec(), rr.Regs.Errors, rr.Base.Errors)
	}
	if cfg.Visible > 0 {
		progress("register-to-visible: %d samples", cfg.Visible)
		if rr.Visible, err = measureVisible(ctx, nc, js, kp, cfg.Visible); err != nil {
			return nil, err
		}
		lat := make([]time.Duration, 0, cfg.Visible)
		errs := 0
		start := time.Now()
		for i := range cfg.Visible {
			m, err := registration(kp, "visbase", "round_robin", fmt.Sprintf("v-%d", i), 0)
			if err != nil {
				return nil, err
			}
			m.Subject = "bench.js.vis"
			t0 := time.Now()
			if _, err := js.PublishMsg(ctx, m); err != nil {
				errs++
				continue
			}
			lat = append(lat, time.Since(t0))
		}
		rr.VisibleJS = Summarize(lat, errs, time.Since(start))
		progress("register-to-visible: rsp p50 %s p99 %s, jetstream publish p50 %s p99 %s",
			rr.Visible.P50, rr.Visible.P99, rr.VisibleJS.P50, rr.VisibleJS.P99)
	}
	return rr, nil
}

// measureVisible: from the publish of a registration of a new PE until a
// watcher of the pool's changes has seen its add and a resolution
// (affinity to the PE, max 1) returns it, one PE after the other.
func measureVisible(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, kp nkeys.KeyPair, n int) (Stats, error) {
	const pool = "vis"
	changes, err := nc.SubscribeSync(events.Subject(events.DefaultScope, events.KindChanges, pool))
	if err != nil {
		return Stats{}, err
	}
	defer func() { _ = changes.Unsubscribe() }()
	lat := make([]time.Duration, 0, n)
	errs := 0
	start := time.Now()
	for i := range n {
		id := fmt.Sprintf("v-%d", i)
		m, err := registration(kp, pool, "round_robin", id, 0)
		if err != nil {
			return Stats{}, err
		}
		q := events.Marshal(events.ResolveRequest{Max: 1, Affinity: id})
		t0 := time.Now()
		if err := visibleOnce(ctx, nc, js, changes, m, pool, id, q); err != nil {
			errs++
			continue
		}
		lat = append(lat, time.Since(t0))
	}
	return Summarize(lat, errs, time.Since(start)), nil
}

func visibleOnce(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, changes *nats.Subscription, m *nats.Msg, pool, id string, q []byte) error {
	start := time.Now()
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return err
	}
	for {
		cm, err := changes.NextMsg(10 * time.Second)
		if err != nil {
			return err
		}
		var ch events.Change
		if json.Unmarshal(cm.Data, &ch) == nil && ch.PEID == id && ch.Op == events.OpAdd {
			break
		}
	}
	for {
		am, err := nc.Request(events.Subject(events.DefaultScope, events.KindResolve, pool), q, 5*time.Second)
		if err != nil {
			return err
		}
		var a events.ResolveAnswer
		if json.Unmarshal(am.Data, &a) == nil && len(a.Elements) == 1 && a.Elements[0].PEID == id {
			return nil
		}
		if time.Since(start) > 10*time.Second {
			return fmt.Errorf("%s not resolvable within 10s", id)
		}
	}
}
