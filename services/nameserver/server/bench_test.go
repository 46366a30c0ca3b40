package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// BenchmarkResolve500 measures resolution of a 500-PE pool (max 3,
// round_robin) next to a bare NATS echo responder that answers with a
// body of the same size, on the same server and connection setup: the
// ratio of the two is the figure to report, not either alone.
func BenchmarkResolve500(b *testing.B) {
	s := startNATS(b)
	startNameServer(b, s, server.Config{})
	setup := connect(b, s)
	fillPool(b, setup, "bench", 500)

	requester := connect(b, s)
	q := events.Marshal(events.ResolveRequest{Max: 3})
	sample, err := requester.Request("rsp.default.resolve.bench", q, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	// The echo responder runs on its own connection, like the name server.
	echoConn := connect(b, s)
	answer := sample.Data
	if _, err := echoConn.Subscribe("bench.echo", func(m *nats.Msg) { _ = m.Respond(answer) }); err != nil {
		b.Fatal(err)
	}
	_ = echoConn.Flush()

	run := func(subject string) func(*testing.B) {
		return func(b *testing.B) {
			b.SetBytes(int64(len(answer)))
			for b.Loop() {
				m, err := requester.Request(subject, q, 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				if len(m.Data) < 20 {
					b.Fatalf("short answer %s", m.Data)
				}
			}
		}
	}
	b.Run("echo", run("bench.echo"))
	b.Run("rsp", run("rsp.default.resolve.bench"))
	parallel := func(subject string) func(*testing.B) {
		return func(b *testing.B) {
			b.SetParallelism(4) // 4 × GOMAXPROCS requesters on one connection
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := requester.Request(subject, q, 5*time.Second); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
	}
	b.Run("echo-parallel", parallel("bench.echo"))
	b.Run("rsp-parallel", parallel("rsp.default.resolve.bench"))
}

// fillPool registers n PEs in pool and waits until resolution shows them.
func fillPool(b testing.TB, nc *nats.Conn, pool string, n int) {
	pe := newSigner(b, nc)
	js, _ := jetstream.New(nc)
	for i := range n {
		reg := registration(fmt.Sprintf("pe-%04d", i), 1)
		reg.LifetimeMS = 3600_000
		m := nats.NewMsg(events.Subject("default", events.KindRegister, pool))
		m.Data = events.Marshal(reg)
		_ = events.SignEvent(m, pe.kp)
		m.Header.Set(events.HeaderMsgID, events.MsgID(reg.PEID, reg.Seq))
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		b.Fatal("registrations not stored within 30s")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		a := resolve(b, nc, pool, events.ResolveRequest{Max: 128, Exclude: nil})
		if a.Error == nil && a.Revision >= uint64(n) {
			// revision ≥ n: every registration has reached the view
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("pool not filled within 30s: %+v", a.Error)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// benchRound makes the pools of successive benchmark rounds distinct.
var benchRound atomic.Int64

// BenchmarkRegister measures registrations per second: b.N signed
// registrations of new PEs (10-minute lifetime), published
// asynchronously through JetStream, until all their accepted outcomes
// have arrived; one name-server replica. R1 runs on one server (the
// stream and buckets have one replica), R3 on a three-node cluster (three
// replicas each: every write waits for a quorum), with the replica and the
// publisher on different nodes. The figure is regs/s; R3/R1 is the cost
// of replication.
//
// R1 syncs every write to the disk before acknowledging it (the embedded
// default, --sync always); R1-sync-2m syncs every 2 minutes (nats-server's
// default): R1/R1-sync-2m is the cost of durability against a machine
// failure.
func BenchmarkRegister(b *testing.B) {
	b.Run("R1", func(b *testing.B) {
		s := startNATS(b)
		startNameServer(b, s, server.Config{})
		benchRegister(b, connect(b, s), 1)
	})
	b.Run("R1-sync-2m", func(b *testing.B) {
		s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: b.TempDir(), SyncInterval: 2 * time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(s.Shutdown)
		startNameServer(b, s, server.Config{})
		benchRegister(b, connect(b, s), 1)
	})
	b.Run("R3", func(b *testing.B) {
		c := nstest.StartCluster(b, 3)
		c.StartNameServer(b, c.URLs(0), server.Config{})
		benchRegister(b, c.Connect(b, c.URLs(1)), 3)
	})
}

func benchRegister(b *testing.B, nc *nats.Conn, replicas int) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		b.Fatal(err)
	}
	if r := st.CachedInfo().Config.Replicas; r != replicas {
		b.Fatalf("%s has %d replicas, want %d", events.StreamName, r, replicas)
	}
	pool := fmt.Sprintf("reg%d", benchRound.Add(1))
	pe := newSigner(b, nc)
	msgs := make([]*nats.Msg, b.N)
	for i := range msgs {
		reg := registration(fmt.Sprintf("pe-%d", i), 1)
		reg.LifetimeMS = 600_000
		m := nats.NewMsg(events.Subject("default", events.KindRegister, pool))
		m.Data = events.Marshal(reg)
		if err := events.SignEvent(m, pe.kp); err != nil {
			b.Fatal(err)
		}
		m.Header.Set(events.HeaderMsgID, events.MsgID(reg.PEID, reg.Seq))
		msgs[i] = m
	}
	var outcomes, refused atomic.Int64
	done := make(chan struct{})
	sub, err := nc.Subscribe(events.OutcomeSubject("default", pool, "*"), func(m *nats.Msg) {
		var out events.Outcome
		if json.Unmarshal(m.Data, &out) == nil && !out.Accepted {
			refused.Add(1)
		}
		if outcomes.Add(1) == int64(b.N) {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for _, m := range msgs {
		// A store that syncs every write acknowledges slower than this
		// publishes: wait for room instead of failing.
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("%d of %d outcomes", outcomes.Load(), b.N)
	}
	b.StopTimer()
	if refused.Load() > 0 {
		b.Fatalf("%d registrations refused", refused.Load())
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "regs/s")
}

// BenchmarkRegisterVisible measures register-to-visible latency: from the
// publish of a signed registration of a new PE until both a watcher of
// rsp.default.changes.<pool> has seen its add and a resolution (affinity
// to the PE, max 1) returns it, one PE after the other. R1 is one server
// with one name-server replica; R3 a three-node cluster with a replica on
// each node (resolutions go to any of them) and the client on a fourth
// connection. Reported: p50-µs and p99-µs.
func BenchmarkRegisterVisible(b *testing.B) {
	b.Run("R1", func(b *testing.B) {
		s := startNATS(b)
		startNameServer(b, s, server.Config{})
		benchVisible(b, connect(b, s))
	})
	b.Run("R3", func(b *testing.B) {
		c := nstest.StartCluster(b, 3)
		for i := range c.Size() {
			c.StartNameServer(b, c.URLs(i), server.Config{ID: fmt.Sprintf("ns-%d", i+1)})
		}
		benchVisible(b, c.Connect(b, c.URLs(1)))
	})
}

func benchVisible(b *testing.B, nc *nats.Conn) {
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	pool := fmt.Sprintf("vis%d", benchRound.Add(1))
	changes, err := nc.SubscribeSync(events.Subject("default", events.KindChanges, pool))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = changes.Unsubscribe() }()
	pe := newSigner(b, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	lat := make([]time.Duration, 0, b.N)
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("pe-%d", i)
		i++
		reg := registration(id, 1)
		reg.LifetimeMS = 600_000
		m := nats.NewMsg(events.Subject("default", events.KindRegister, pool))
		m.Data = events.Marshal(reg)
		if err := events.SignEvent(m, pe.kp); err != nil {
			b.Fatal(err)
		}
		m.Header.Set(events.HeaderMsgID, events.MsgID(reg.PEID, reg.Seq))
		q := events.Marshal(events.ResolveRequest{Max: 1, Affinity: id})
		start := time.Now()
		if _, err := js.PublishMsg(ctx, m); err != nil {
			b.Fatal(err)
		}
		for {
			cm, err := changes.NextMsg(10 * time.Second)
			if err != nil {
				b.Fatalf("no change for %s: %v", id, err)
			}
			var ch events.Change
			if json.Unmarshal(cm.Data, &ch) == nil && ch.PEID == id && ch.Op == events.OpAdd {
				break
			}
		}
		for {
			am, err := nc.Request(events.Subject("default", events.KindResolve, pool), q, 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			var a events.ResolveAnswer
			if json.Unmarshal(am.Data, &a) == nil && len(a.Elements) == 1 && a.Elements[0].PEID == id {
				break
			}
			if time.Since(start) > 10*time.Second {
				b.Fatalf("%s not resolvable within 10s", id)
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(0, "ns/op")
}
