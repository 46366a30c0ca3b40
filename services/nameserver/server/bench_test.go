package server_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
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
