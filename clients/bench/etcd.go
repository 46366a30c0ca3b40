package bench

// The etcd baseline: what a user might pick instead of rsp. If an `etcd`
// binary is on PATH, the bench starts it on free loopback ports in a temp
// dir, stores every PE of the rsp pools as a key with its own lease under
// /rsp/<pool>/<pe_id> (value: the same element JSON an rsp resolution
// answer carries), and measures resolve-and-pick there: a range read of
// the pool prefix plus the same policy pick in the client. It also
// measures lease-grant+put latency and watch latency (put until a watcher
// of the prefix sees it).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/policy"
)

// EtcdRow is one (pool size, policy, clients) cell of resolve-and-pick on
// etcd; the rsp figure of the same cell is in Report.Resolve.
type EtcdRow struct {
	PEs     int
	Policy  string
	Clients int
	Bytes   int // keys and values a range read of the pool returns
	Stats   Stats
}

// EtcdResult is the etcd column.
type EtcdResult struct {
	Version  string
	Resolve  []EtcdRow
	LeasePut Stats // lease grant + put with the lease, one after the other
	Watch    Stats // put until a watcher of the prefix sees the event
}

// etcdKey is where PE id of pool lives.
func etcdKey(pool, id string) string { return "/rsp/" + pool + "/" + id }

// etcdPrefix is the prefix of pool's keys.
func etcdPrefix(pool string) string { return "/rsp/" + pool + "/" }

// benchElement is the element rsp's answer carries for the PE that
// fillPool registers as PE i of pool (same transports, policy and load),
// so the etcd values have the same size as rsp's elements.
func benchElement(pool, pol string, i int) events.Element {
	return events.Element{
		PEID:       fmt.Sprintf("%s-pe-%04d", pool, i),
		Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7001"}},
		Policy:     events.PolicyParams{Name: pol, Load: float64(i%10) / 10},
	}
}

// pickFromRange is the client side of resolve-and-pick on etcd: it decodes
// the elements stored as the values of kvs (a range read of one pool
// prefix, sorted by key and so by PE id), turns them into candidates and
// lets p pick at most n of them. cands and dst are reused buffers; the
// picked elements are returned.
func pickFromRange(p policy.Picker, kvs []*mvccpb.KeyValue, n int, els []events.Element, cands []policy.Candidate, dst []int) ([]events.Element, []events.Element, []policy.Candidate, []int, error) {
	els, cands = els[:0], cands[:0]
	for _, kv := range kvs {
		var el events.Element
		if err := json.Unmarshal(kv.Value, &el); err != nil {
			return nil, els, cands, dst, fmt.Errorf("%s: %w", kv.Key, err)
		}
		if el.PEID == "" {
			return nil, els, cands, dst, fmt.Errorf("%s: no pe_id", kv.Key)
		}
		els = append(els, el)
		cands = append(cands, policy.CandidateOf(el.PEID, uint64(kv.ModRevision), el.Policy, el.Meta))
	}
	if len(cands) == 0 {
		return nil, els, cands, dst, errors.New("empty pool")
	}
	dst = policy.Select(p, dst[:0], cands, n, nil)
	picked := make([]events.Element, len(dst))
	for i, j := range dst {
		picked[i] = els[j]
	}
	return picked, els, cands, dst, nil
}

// kvBytes is the size of the keys and values of kvs.
func kvBytes(kvs []*mvccpb.KeyValue) int {
	n := 0
	for _, kv := range kvs {
		n += len(kv.Key) + len(kv.Value)
	}
	return n
}

// etcdServer is an etcd process started by the bench.
type etcdServer struct {
	cmd      *exec.Cmd
	endpoint string
	log      string
	exited   chan struct{}
}

// freePort is a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startEtcd starts bin as a single-member cluster on free loopback ports
// with its data in dir, and waits (at most 20s) until it serves reads.
func startEtcd(ctx context.Context, bin, dir string) (*etcdServer, *clientv3.Client, error) {
	cp, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	pp, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", cp)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pp)
	logPath := filepath.Join(dir, "etcd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin,
		"--name", "bench",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "bench="+peer,
		"--initial-cluster-state", "new",
		"--initial-cluster-token", "rsp-bench",
		"--logger", "zap", "--log-level", "error",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, err
	}
	s := &etcdServer{cmd: cmd, endpoint: client, log: logPath, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(s.exited) }()
	fail := func(err error) (*etcdServer, *clientv3.Client, error) {
		s.stop()
		return nil, nil, fmt.Errorf("%w%s", err, s.logTail())
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fail(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(c, "/rsp/health")
		cancel()
		if err == nil {
			return s, cli, nil
		}
		select {
		case <-s.exited:
			cli.Close()
			return fail(errors.New("etcd exited"))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			cli.Close()
			return fail(fmt.Errorf("etcd not healthy within 20s: %w", err))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logTail is the end of the etcd log, for error messages.
func (s *etcdServer) logTail() string {
	b, _ := os.ReadFile(s.log)
	t := strings.TrimSpace(string(b))
	if len(t) > 600 {
		t = t[len(t)-600:]
	}
	if t == "" {
		return ""
	}
	return " (etcd log: " + t + ")"
}

// stop terminates etcd and waits for it (killing it after 5s).
func (s *etcdServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// runEtcd measures the etcd column if etcd is on PATH. It returns the
// result, or nil and the reason the column is missing.
func runEtcd(ctx context.Context, cfg Config, progress func(string, ...any)) (*EtcdResult, string) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		return nil, "etcd not found, column skipped"
	}
	res, err := measureEtcd(ctx, cfg, bin, progress)
	if err != nil {
		return nil, fmt.Sprintf("etcd (%s) failed, column skipped: %v", bin, err)
	}
	return res, ""
}

// measureEtcd starts etcd from bin and measures resolve-and-pick for every
// cell of cfg, lease-grant+put and watch latency, then stops it.
func measureEtcd(ctx context.Context, cfg Config, bin string, progress func(string, ...any)) (*EtcdResult, error) {
	dir, err := os.MkdirTemp("", "rsp-bench-etcd")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, cli, err := startEtcd(ctx, bin, dir)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	defer cli.Close()
	res := &EtcdResult{}
	if st, err := cli.Status(ctx, srv.endpoint); err == nil {
		res.Version = st.Version
	}
	progress("etcd %s (%s) on %s", res.Version, bin, srv.endpoint)

	for _, size := range cfg.Pools {
		for _, pol := range cfg.Policies {
			pool := fmt.Sprintf("p%d-%s", size, strings.ReplaceAll(pol, "_", "-"))
			b, ok := policy.Get(pol)
			if !ok {
				return nil, fmt.Errorf("unknown policy %q", pol)
			}
			progress("etcd: filling %s with %d PEs (one lease each)", pool, size)
			if err := fillEtcd(ctx, cli, pool, pol, size); err != nil {
				return nil, err
			}
			probe, err := cli.Get(ctx, etcdPrefix(pool), clientv3.WithPrefix())
			if err != nil {
				return nil, err
			}
			if len(probe.Kvs) != size {
				return nil, fmt.Errorf("etcd: %s has %d keys, want %d", pool, len(probe.Kvs), size)
			}
			picker := b.Build() // one per pool, shared by the clients, like the name server's
			for _, n := range cfg.Clients {
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				row := EtcdRow{PEs: size, Policy: pol, Clients: n, Bytes: kvBytes(probe.Kvs)}
				row.Stats = loadOps(n, cfg.Warmup, cfg.Duration, func() func() error {
					var els []events.Element
					var cands []policy.Candidate
					var dst []int
					return func() error {
						r, err := cli.Get(ctx, etcdPrefix(pool), clientv3.WithPrefix())
						if err != nil {
							return err
						}
						var picked []events.Element
						picked, els, cands, dst, err = pickFromRange(picker, r.Kvs, cfg.MaxPEs, els, cands, dst)
						if err == nil && len(picked) != min(cfg.MaxPEs, size) {
							err = fmt.Errorf("picked %d", len(picked))
						}
						return err
					}
				})
				res.Resolve = append(res.Resolve, row)
				progress("etcd resolve-and-pick %3d PEs %-11s %2d clients: %8.0f/s p50 %s p99 %s, errors %d",
					size, pol, n, row.Stats.PerSec(), row.Stats.P50, row.Stats.P99, row.Stats.Errors)
			}
		}
	}
	if cfg.Visible > 0 {
		progress("etcd: lease-grant+put and watch latency, %d samples each", cfg.Visible)
		res.LeasePut = etcdLeasePut(ctx, cli, cfg.Visible)
		res.Watch = etcdWatch(ctx, cli, cfg.Visible)
		progress("etcd lease-grant+put p50 %s p99 %s; watch p50 %s p99 %s; errors %d/%d",
			res.LeasePut.P50, res.LeasePut.P99, res.Watch.P50, res.Watch.P99, res.LeasePut.Errors, res.Watch.Errors)
	}
	return res, nil
}

// fillEtcd puts size PEs of pool, each under its own lease.
func fillEtcd(ctx context.Context, cli *clientv3.Client, pool, pol string, size int) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= size {
					return
				}
				el := benchElement(pool, pol, i)
				l, err := cli.Grant(ctx, 3600)
				if err == nil {
					_, err = cli.Put(ctx, etcdKey(pool, el.PEID), string(events.Marshal(el)), clientv3.WithLease(l.ID))
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("etcd fill %s: %w", pool, err):
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// etcdLeasePut is the latency of registering a new PE on etcd: grant a
// lease, then put its element with the lease.
func etcdLeasePut(ctx context.Context, cli *clientv3.Client, n int) Stats {
	lat := make([]time.Duration, 0, n)
	errs := 0
	start := time.Now()
	for i := range n {
		el := benchElement("vis", "round_robin", i)
		v := string(events.Marshal(el))
		t0 := time.Now()
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		l, err := cli.Grant(c, 3600)
		if err == nil {
			_, err = cli.Put(c, etcdKey("vis", el.PEID), v, clientv3.WithLease(l.ID))
		}
		cancel()
		if err != nil {
			errs++
			continue
		}
		lat = append(lat, time.Since(t0))
	}
	return Summarize(lat, errs, time.Since(start))
}

// etcdWatch is the latency from a put until a watcher of the pool prefix
// (on the same client) receives the event, one put after the other.
func etcdWatch(ctx context.Context, cli *clientv3.Client, n int) Stats {
	const pool = "watch"
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(wctx, etcdPrefix(pool), clientv3.WithPrefix())
	// make sure the watch is established before the first put
	if _, err := cli.Put(ctx, etcdKey(pool, "ready"), "{}"); err == nil {
		select {
		case <-wch:
		case <-time.After(10 * time.Second):
		}
	}
	lat := make([]time.Duration, 0, n)
	errs := 0
	start := time.Now()
	for i := range n {
		el := benchElement(pool, "round_robin", i)
		key := etcdKey(pool, el.PEID)
		t0 := time.Now()
		if _, err := cli.Put(ctx, key, string(events.Marshal(el))); err != nil {
			errs++
			continue
		}
		if waitWatch(wch, key, 10*time.Second) {
			lat = append(lat, time.Since(t0))
		} else {
			errs++
		}
	}
	return Summarize(lat, errs, time.Since(start))
}

// waitWatch waits until wch delivers a put of key.
func waitWatch(wch clientv3.WatchChan, key string, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				return false
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut && string(ev.Kv.Key) == key {
					return true
				}
			}
		case <-t.C:
			return false
		}
	}
}

// writeEtcd writes the etcd section of the Markdown report.
func (r *Report) writeEtcd(b *strings.Builder) {
	e := r.EtcdRun
	if e == nil {
		fmt.Fprintf(b, "## etcd\n\n%s.\n", r.Etcd)
		return
	}
	fmt.Fprintf(b, "## Resolve-and-pick vs. etcd\n\n")
	fmt.Fprintf(b, "etcd %s, started by the bench as a single member on loopback (temp data dir, default settings), "+
		"measured in the same run after rsp with the same pool sizes, policies and client counts. Every PE of the pool "+
		"is a key /rsp/<pool>/<pe_id> with its own lease; its value is the element JSON an rsp answer carries for that PE "+
		"(same transports, policy and load, so the same size per element). One resolve-and-pick on etcd = a range read "+
		"of the pool prefix over one shared clientv3 client, decoding every value into a candidate, and the same policy "+
		"pick (policy.Get(name).Build(), one picker per pool) of %d PEs in the client. etcd has to ship the whole pool "+
		"(etcd bytes) where rsp ships only the picked elements (rsp bytes): that is the design difference measured. "+
		"ratio = rsp / etcd throughput (target ≥ 3).\n\n", e.Version, r.Config.MaxPEs)
	fmt.Fprintf(b, "| PEs | policy | clients | rsp bytes | etcd bytes | rsp req/s | etcd req/s | ratio | rsp p50 µs | etcd p50 µs | rsp p99 µs | etcd p99 µs | errors rsp/etcd |\n")
	fmt.Fprintf(b, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, er := range e.Resolve {
		var rr *ResolveRow
		for i := range r.Resolve {
			if x := &r.Resolve[i]; x.PEs == er.PEs && x.Policy == er.Policy && x.Clients == er.Clients {
				rr = x
				break
			}
		}
		if rr == nil {
			continue // no figure without its baseline
		}
		fmt.Fprintf(b, "| %d | %s | %d | %d | %d | %.0f | %.0f | %.2f | %s | %s | %s | %s | %d/%d |\n",
			er.PEs, er.Policy, er.Clients, rr.Payload, er.Bytes, rr.RSP.PerSec(), er.Stats.PerSec(),
			Ratio(rr.RSP.PerSec(), er.Stats.PerSec()), us(rr.RSP.P50), us(er.Stats.P50), us(rr.RSP.P99), us(er.Stats.P99),
			rr.RSP.Errors, er.Stats.Errors)
	}
	b.WriteString("\n")
	if e.LeasePut.Ops+e.LeasePut.Errors+e.Watch.Ops+e.Watch.Errors > 0 {
		fmt.Fprintf(b, "Registration and change notification on etcd, one sample after the other: lease-grant+put = "+
			"grant a lease, then put a new PE's element with it (etcd fsyncs every write; the JetStream stream behind rsp "+
			"does not sync each write by default); watch = put of a new key until a watcher of the prefix on the same "+
			"client receives the event. rsp's register-to-visible (publish until a watcher has seen the add and a "+
			"resolution returns the PE) and change-notification latency (add) are beside them, when measured.\n\n")
		fmt.Fprintf(b, "| etcd measurement | p50 µs | p99 µs | errors | rsp beside it | rsp p50 µs | rsp p99 µs |\n|---|---:|---:|---:|---|---:|---:|\n")
		vis, ch := [2]string{"–", "–"}, [2]string{"–", "–"}
		if rr := r.Register; rr != nil && rr.Visible.Ops > 0 {
			vis = [2]string{us(rr.Visible.P50), us(rr.Visible.P99)}
		}
		if c := r.Changes; c != nil && c.Add.Ops > 0 {
			ch = [2]string{us(c.Add.P50), us(c.Add.P99)}
		}
		fmt.Fprintf(b, "| lease-grant+put | %s | %s | %d | register-to-visible | %s | %s |\n",
			us(e.LeasePut.P50), us(e.LeasePut.P99), e.LeasePut.Errors, vis[0], vis[1])
		fmt.Fprintf(b, "| watch (put until seen) | %s | %s | %d | change notification (add) | %s | %s |\n",
			us(e.Watch.P50), us(e.Watch.P99), e.Watch.Errors, ch[0], ch[1])
		b.WriteString("\n")
	}
}
