package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
)

// crashCycles and crashPreload: how many kill -9 / restart cycles, and how
// many PEs load the store before them (RSP_CRASH_PES overrides).
const (
	crashCycles  = 20
	crashPreload = 20000
	crashPools   = 8 // pools of the workload, each well under resolve's max of 128
	crashWorkers = 12
)

// TestKillNineKeepsAcknowledged (issue 15): the default name server (its
// binary, embedded NATS, secure, every setting at its default) is killed
// with SIGKILL in the middle of registrations, deregistrations and expiries,
// 20 times, on a store loaded with 20 000 PEs and their renewals, and
// started again on the same data each time. After each restart:
//   - no PE whose removal the name space had shown (deregistered, expired)
//     is served, from the first resolution on;
//   - once the events the stream acknowledged are applied, the name space
//     equals the acknowledged history: every acknowledged registration of
//     a PE not deregistered since is there, every acknowledged
//     deregistration holds, every short-lived PE whose lifetime ran out is
//     gone. Events whose acknowledgement the kill cut off may go either way.
//
// One cycle keeps the name server down for longer than the clock skew
// (30 s): events acknowledged before the kill must still be applied.
func TestKillNineKeepsAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("twenty kill -9 cycles on a loaded store take minutes")
	}
	nstest.Heavy(t)
	preload := crashPreload
	if v, err := strconv.Atoi(os.Getenv("RSP_CRASH_PES")); err == nil && v >= 0 {
		preload = v
	}
	data := t.TempDir()
	addr := freeAddr(t)
	logPath := filepath.Join(data, "nameserver.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	// One signer preloads and loads every PE, at full speed: the signer
	// quotas are not what this test is about.
	args := []string{"--listen", addr, "--data", data, "--max-pes-per-signer", "-1", "--new-pes-per-second", "-1"}
	start := func() (process, time.Duration) {
		t.Helper()
		began := time.Now()
		p := startProcessLogging(t, logFile, args...)
		return p, time.Since(began)
	}
	p, _ := start()
	w := newCrashWorld(t, data, p.natsURL)

	began := time.Now()
	w.preload(t, preload)
	t.Logf("store loaded: %d PEs registered and renewed twice in %s", preload, time.Since(began).Round(time.Millisecond))

	var restarts []time.Duration
	for cycle := range crashCycles {
		w.connect(t, p.natsURL)
		w.checkServed(t, cycle)
		run := time.Duration(300+rand.IntN(2200)) * time.Millisecond
		stop := w.runLoad(run)
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
		stop()
		w.close()
		if cycle == crashCycles/2 {
			t.Logf("cycle %d: down for 35 s, longer than the clock skew", cycle)
			time.Sleep(35 * time.Second)
		}
		var took time.Duration
		p, took = start()
		restarts = append(restarts, took)
		w.connect(t, p.natsURL)
		w.checkServed(t, cycle)
		w.converge(t, cycle, logPath)
		w.close()
	}
	slices.Sort(restarts)
	t.Logf("%d cycles: %s; restart to ready: median %s, max %s", crashCycles, w.stats(),
		restarts[len(restarts)/2].Round(time.Millisecond), restarts[len(restarts)-1].Round(time.Millisecond))
}

// crashPE is what the acknowledged history says of one PE.
type crashPE struct {
	pool, id  string
	seq       uint64
	present   bool      // its last acknowledged event registered it
	expiresAt time.Time // short-lived: gone after this; zero for long-lived
	uncertain bool      // an event's acknowledgement was cut off: either way
	removed   bool      // the name space showed it gone (deregistered or expired)
}

func (pe *crashPE) key() string { return events.Key(pe.pool, pe.id) }

// crashWorld is the load and the acknowledged history.
type crashWorld struct {
	data       string
	token      string
	kp         nkeys.KeyPair
	pe, pu, ad *nats.Conn
	js         jetstream.JetStream

	mu    sync.Mutex
	pes   map[string]*crashPE
	live  []*crashPE // long-lived workload PEs registered, none of their events cut off
	next  int
	count struct{ registered, deregistered, short, cut, lost, back, served int }
}

func newCrashWorld(t *testing.T, data, url string) *crashWorld {
	t.Helper()
	token, kp, err := rspclient.LoadCreds(credsOf(data, "default", "pe"))
	if err != nil {
		t.Fatal(err)
	}
	w := &crashWorld{data: data, token: token, kp: kp, pes: map[string]*crashPE{}}
	w.connect(t, url)
	return w
}

func (w *crashWorld) connect(t *testing.T, url string) {
	t.Helper()
	var err error
	dial := func(role string) *nats.Conn {
		nc, e := nats.Connect(url, natsconn.Creds(credsOf(w.data, "default", role)), nats.Timeout(5*time.Second))
		if e != nil {
			err = e
		}
		return nc
	}
	w.pe, w.pu, w.ad = dial("pe"), dial("pu"), dial("admin")
	if err != nil {
		t.Fatal(err)
	}
	if w.js, err = jetstream.New(w.pe); err != nil {
		t.Fatal(err)
	}
}

func (w *crashWorld) close() {
	for _, nc := range []*nats.Conn{w.pe, w.pu, w.ad} {
		if nc != nil {
			nc.Close()
		}
	}
}

// event is a signed register (lifetime > 0) or deregister event of pe.
func (w *crashWorld) event(pe *crashPE, lifetime time.Duration) *nats.Msg {
	kind := events.KindDeregister
	var body []byte
	now := time.Now().UTC()
	if lifetime > 0 {
		kind = events.KindRegister
		body = events.Marshal(events.Registration{PEID: pe.id, Seq: pe.seq, Time: now, LifetimeMS: lifetime.Milliseconds(),
			Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7001"}}, Policy: events.PolicyParams{Name: "round_robin"}})
	} else {
		body = events.Marshal(events.Deregistration{PEID: pe.id, Seq: pe.seq, Time: now})
	}
	m := nats.NewMsg(events.Subject("default", kind, pe.pool))
	m.Data = body
	if err := events.SignEvent(m, w.kp); err != nil {
		panic(err)
	}
	events.SetJWT(m, w.token)
	m.Header.Set(events.HeaderMsgID, events.MsgID(pe.id, pe.seq))
	return m
}

// preload registers n long-lived PEs, renews each twice (a store with
// history: records replaced, events piled up), and waits until the name
// space holds them all.
func (w *crashWorld) preload(t *testing.T, n int) {
	t.Helper()
	if n == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pes := make([]*crashPE, n)
	for i := range pes {
		pes[i] = &crashPE{pool: fmt.Sprintf("load-%03d", i/100), id: fmt.Sprintf("pe-%05d", i), present: true}
		w.pes[pes[i].key()] = pes[i]
	}
	for round := range 3 {
		for i, pe := range pes {
			pe.seq = uint64(round + 1)
			if _, err := w.js.PublishMsgAsync(w.event(pe, time.Hour)); err != nil {
				t.Fatal(err)
			}
			if i%1000 == 999 || i == len(pes)-1 {
				select {
				case <-w.js.PublishAsyncComplete():
				case <-ctx.Done():
					t.Fatal("preload: publishes not acknowledged within 10 min")
				}
			}
		}
	}
	w.waitRecords(t, ctx, n)
}

// waitRecords waits until the name space holds at least n records.
func (w *crashWorld) waitRecords(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	for {
		recs, err := w.records(ctx)
		if err == nil && len(recs) >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the name space holds %d records, want %d (%v)", len(recs), n, err)
		case <-time.After(time.Second):
		}
	}
}

// records reads the name space (the admin's view of the bucket).
func (w *crashWorld) records(ctx context.Context) (map[string]bool, error) {
	c, err := rspclient.New(w.ad)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	recs, err := c.Pools(rctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(recs))
	for _, r := range recs {
		out[events.Key(r.Pool, r.PEID)] = true
	}
	return out, nil
}

// runLoad starts crashWorkers workers that register new PEs (long- and
// short-lived) and deregister long-lived ones in the workload's pools, one
// event at a time each, until the returned stop is called (after run at
// the earliest, when the caller kills the name server).
func (w *crashWorld) runLoad(run time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range crashWorkers {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				w.step()
			}
		})
	}
	time.Sleep(run)
	return func() { close(done); wg.Wait() }
}

// step sends one event and records what its acknowledgement says.
func (w *crashWorld) step() {
	w.mu.Lock()
	var pe *crashPE
	lifetime := time.Hour
	if r := rand.IntN(10); r < 3 && len(w.live) > 0 {
		// Deregister a long-lived PE of the workload.
		i := rand.IntN(len(w.live))
		pe, lifetime = w.live[i], 0
		w.live = slices.Delete(w.live, i, i+1)
	} else {
		w.next++
		pe = &crashPE{pool: fmt.Sprintf("crash-%d", w.next%crashPools), id: fmt.Sprintf("w%06d", w.next)}
		if r >= 8 {
			lifetime = time.Second // short-lived, never renewed
		}
		w.pes[pe.key()] = pe
	}
	pe.seq++
	pe.uncertain = true // until acknowledged
	m := w.event(pe, lifetime)
	w.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := w.js.PublishMsg(ctx, m)
	cancel()
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.count.cut++
		return // the kill cut it off (or it timed out): either way
	}
	pe.uncertain = false
	pe.present = lifetime > 0
	switch {
	case lifetime == 0:
		w.count.deregistered++
	case lifetime == time.Second:
		pe.expiresAt = time.Now().Add(lifetime)
		w.count.short++
	default:
		w.live = append(w.live, pe)
		w.count.registered++
	}
}

// checkServed fails if a resolution of a workload pool returns a PE the
// name space had shown removed.
func (w *crashWorld) checkServed(t *testing.T, cycle int) {
	t.Helper()
	for i := range crashPools {
		pool := fmt.Sprintf("crash-%d", i)
		m, err := w.pu.Request(events.Subject("default", events.KindResolve, pool), []byte(`{"max":128}`), 5*time.Second)
		if err != nil {
			t.Fatalf("cycle %d: resolve %s: %v", cycle, pool, err)
		}
		var a events.ResolveAnswer
		if err := events.Decode(m.Data, &a); err != nil {
			t.Fatal(err)
		}
		w.mu.Lock()
		for _, el := range a.Elements {
			if pe := w.pes[events.Key(pool, el.PEID)]; pe != nil && pe.removed && !pe.uncertain {
				w.count.served++
				t.Errorf("cycle %d: %s/%s served after its removal", cycle, pool, el.PEID)
			}
		}
		w.mu.Unlock()
	}
}

// converge waits (at most a minute) until the name space equals the
// acknowledged history, and fails with the differences if it does not.
func (w *crashWorld) converge(t *testing.T, cycle int, logPath string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var missing, back []string
	for {
		recs, err := w.records(ctx)
		if err == nil {
			missing, back = w.diff(recs)
			if len(missing) == 0 && len(back) == 0 {
				w.mu.Lock()
				for _, pe := range w.pes {
					if !pe.uncertain && !recs[pe.key()] {
						pe.removed = true
					}
				}
				w.mu.Unlock()
				return
			}
		}
		select {
		case <-ctx.Done():
			w.mu.Lock()
			w.count.lost += len(missing)
			w.count.back += len(back)
			for _, k := range append(head(missing), head(back)...) {
				pe := w.pes[k]
				t.Logf("%s: seq %d, present %v, expires %s", k, pe.seq, pe.present, pe.expiresAt.Format(time.RFC3339Nano))
			}
			w.mu.Unlock()
			if b, err := os.ReadFile(logPath); err == nil {
				kept := filepath.Join(os.TempDir(), fmt.Sprintf("rsp-crash-%d.log", time.Now().Unix()))
				if os.WriteFile(kept, b, 0o644) == nil {
					logPath = kept
				}
			}
			t.Fatalf("cycle %d: after a minute the name space still differs from the acknowledged history: %d acknowledged PEs missing %v, %d removed PEs back %v (read error %v; name-server log: %s)",
				cycle, len(missing), head(missing), len(back), head(back), err, logPath)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// diff compares the name space with the history.
func (w *crashWorld) diff(recs map[string]bool) (missing, back []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	for k, pe := range w.pes {
		switch {
		case pe.uncertain:
		case pe.present && pe.expiresAt.IsZero() && !recs[k]:
			missing = append(missing, k)
		case !pe.present && recs[k]:
			back = append(back, k)
		case !pe.expiresAt.IsZero() && now.After(pe.expiresAt.Add(3*time.Second)) && recs[k]:
			// Expired (its lifetime, then a restart's hold of at most one
			// lifetime, then the sweep).
			back = append(back, k)
		}
	}
	slices.Sort(missing)
	slices.Sort(back)
	return missing, back
}

func head(s []string) []string { return s[:min(len(s), 5)] }

func (w *crashWorld) stats() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.count
	return fmt.Sprintf("%d registrations, %d deregistrations and %d short-lived registrations acknowledged, %d cut off by the kill; "+
		"lost %d, back %d, served after removal %d", c.registered, c.deregistered, c.short, c.cut, c.lost, c.back, c.served)
}

// TestKillNineKeepsAuthAndReports (issue 15): what the buckets rsp_auth
// and rsp_<scope>_reports acknowledged survives a kill -9 of the default
// name server. A revocation written just before the kill still refuses
// the revoked user after the restart; two failure reports counted before
// the kill still count after it, so that a third reporter takes the PE out.
func TestKillNineKeepsAuthAndReports(t *testing.T) {
	data := t.TempDir()
	addr := freeAddr(t)
	healthy, err := net.Listen("tcp", "127.0.0.1:0") // the PE's transport: checks of it pass
	if err != nil {
		t.Fatal(err)
	}
	defer healthy.Close()
	go func() {
		for {
			c, err := healthy.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	args := []string{"--listen", addr, "--data", data}
	p := startProcess(t, args...)
	rsp := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(rspBin, append([]string{"--nats", p.natsURL, "--data", data}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("rsp %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	creds := func(role, name string) string {
		t.Helper()
		path := filepath.Join(data, name+".creds")
		rsp("auth", "user", "--role", role, "--pool", "*", "--out", path)
		return path
	}
	victimCreds := creds("pe", "victim")
	_, victimKey, err := rspclient.LoadCreds(victimCreds)
	if err != nil {
		t.Fatal(err)
	}
	victimPub, _ := victimKey.PublicKey()
	reporters := []string{creds("pu", "r1"), creds("pu", "r2"), creds("pu", "r3")}

	// The PE that will be reported, registered by the default pe user.
	w := newCrashWorld(t, data, p.natsURL)
	pe := &crashPE{pool: "reported", id: "pe-1", seq: 1}
	m := w.event(pe, time.Hour)
	var reg events.Registration
	_ = events.Decode(m.Data, &reg)
	reg.Transports = []events.Transport{{Proto: "tcp", Addr: healthy.Addr().String()}}
	m.Data = events.Marshal(reg)
	_ = events.SignEvent(m, w.kp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := w.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	changes, err := w.pu.SubscribeSync(events.Subject("default", events.KindChanges, "reported"))
	if err != nil {
		t.Fatal(err)
	}
	report := func(url, credsPath string) {
		t.Helper()
		token, kp, err := rspclient.LoadCreds(credsPath)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(url, natsconn.Creds(credsPath))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		r := nats.NewMsg(events.Subject("default", events.KindFailure, "reported"))
		r.Data = events.Marshal(events.FailureReport{PEID: "pe-1", Time: time.Now().UTC(), Reason: "test"})
		if err := events.SignEvent(r, kp); err != nil {
			t.Fatal(err)
		}
		events.SetJWT(r, token)
		r.Header.Set(events.HeaderMsgID, fmt.Sprintf("report-%d", time.Now().UnixNano()))
		if _, err := js.PublishMsg(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the registration is applied: resolvable.
	for {
		a, err := w.pu.Request(events.Subject("default", events.KindResolve, "reported"), nil, 5*time.Second)
		if err == nil && strings.Contains(string(a.Data), `"pe-1"`) {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("pe-1 never resolvable")
		}
		time.Sleep(100 * time.Millisecond)
	}
	report(p.natsURL, reporters[0])
	report(p.natsURL, reporters[1])
	// Both counted in rsp_default_reports before the kill.
	kv, err := jetstream.New(w.ad)
	if err != nil {
		t.Fatal(err)
	}
	rkv, err := kv.KeyValue(ctx, events.ReportsBucket("default"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		e, err := rkv.Get(ctx, "reported.pe-1")
		var reps events.Reports
		if err == nil && events.Decode(e.Value(), &reps) == nil && len(reps) == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the two reports were not counted: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rsp("auth", "revoke", victimPub)
	w.close()
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()

	p = startProcess(t, args...)
	if nc, err := nats.Connect(p.natsURL, natsconn.Creds(victimCreds), nats.Timeout(3*time.Second)); err == nil {
		nc.Close()
		t.Fatal("the revoked user connected after the restart")
	}
	w.connect(t, p.natsURL)
	defer w.close()
	// Its JWT carried by an event sent over another connection: the name
	// server refuses it (the account JWT in rsp_auth lists the revocation).
	victimToken, _, _ := rspclient.LoadCreds(victimCreds)
	outcomes, err := w.pe.SubscribeSync(events.OutcomeSubject("default", "reported", "pe-9"))
	if err != nil {
		t.Fatal(err)
	}
	ev := nats.NewMsg(events.Subject("default", events.KindRegister, "reported"))
	ev.Data = events.Marshal(events.Registration{PEID: "pe-9", Seq: 1, Time: time.Now().UTC(),
		Transports: []events.Transport{{Proto: "tcp", Addr: healthy.Addr().String()}}, Policy: events.PolicyParams{Name: "round_robin"}})
	if err := events.SignEvent(ev, victimKey); err != nil {
		t.Fatal(err)
	}
	events.SetJWT(ev, victimToken)
	ev.Header.Set(events.HeaderMsgID, "pe-9-1")
	if _, err := w.js.PublishMsg(ctx, ev); err != nil {
		t.Fatal(err)
	}
	om, err := outcomes.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no outcome for the revoked user's event: %v", err)
	}
	var out events.Outcome
	if err := events.Decode(om.Data, &out); err != nil || out.Accepted || out.Error == nil || out.Error.Code != events.CodeForbidden || !strings.Contains(out.Error.Message, "revoked") {
		t.Fatalf("the revoked user's event after the restart: %s", om.Data)
	}
	changes, err = w.pu.SubscribeSync(events.Subject("default", events.KindChanges, "reported"))
	if err != nil {
		t.Fatal(err)
	}
	report(p.natsURL, reporters[2])
	msg, err := changes.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no change after the third report: the reports counted before the kill were lost (%v)", err)
	}
	var ch events.Change
	if err := events.Decode(msg.Data, &ch); err != nil || ch.Op != events.OpRemove || ch.PEID != "pe-1" || ch.Reason != events.ReasonFailed {
		t.Fatalf("change %s, want pe-1 removed as failed", msg.Data)
	}
}

// freeAddr is a loopback HOST:PORT free now, for a name server that must
// listen on the same address again after a restart.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
