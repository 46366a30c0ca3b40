package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// BenchmarkMonitor measures what the pool page costs the name server with
// 5 000 PEs in 10 pools: a snapshot (what each page gets when it opens),
// next to the baseline of encoding the same records with encoding/json
// alone; and a stats round in which every pool changed (the worst case:
// each PE's update time is read to find renewals), next to one without
// pages (pool summaries only).
func BenchmarkMonitor(b *testing.B) {
	const pools, perPool = 10, 500
	s := nstest.StartNATS(b)
	ns := nstest.StartNameServer(b, s, server.Config{})
	fill(b, s.ClientURL(), ns, pools, perPool)
	m := New(Config{Logger: nstest.Logger()})
	b.Cleanup(m.Close)
	m.mu.Lock()
	m.servers = []*server.NameServer{ns} // no Attach: no stats loop running beside the benchmark
	m.mu.Unlock()

	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			sseFrame("snapshot", m.snapshot())
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(pools*perPool), "ns/PE")
	})
	b.Run("snapshot-baseline-json", func(b *testing.B) {
		var recs []events.Record
		for i := range pools {
			_, r, _ := ns.Pool("default", fmt.Sprintf("p%d", i))
			recs = append(recs, r...)
		}
		b.ResetTimer()
		for b.Loop() {
			if _, err := json.Marshal(recs); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(pools*perPool), "ns/PE")
	})
	b.Run("stats-all-pools-changed", func(b *testing.B) {
		st := statsState{}
		for b.Loop() {
			st.seen = map[string]*poolSeen{} // every pool looks changed: all PEs are read
			st.next(m, time.Now(), true)
		}
	})
	b.Run("stats-no-pages", func(b *testing.B) {
		st := statsState{seen: map[string]*poolSeen{}}
		for b.Loop() {
			st.next(m, time.Now(), false)
		}
	})
}

// fill registers pools×perPool PEs with signed events published straight
// to JetStream, and waits until ns shows them all.
func fill(b *testing.B, url string, ns *server.NameServer, pools, perPool int) {
	b.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kp, _ := nkeys.CreateUser()
	now := time.Now().UTC()
	for p := range pools {
		for i := range perPool {
			reg := events.Registration{PEID: fmt.Sprintf("pe-%d", i), Seq: 1, Time: now, LifetimeMS: 3_600_000,
				Transports: []events.Transport{{Proto: "tcp", Addr: fmt.Sprintf("10.0.%d.%d:7000", p, i%250)}},
				Policy:     events.PolicyParams{Name: "least_used", Load: 0.25}, Meta: map[string]string{"zone": "a"}}
			m := nats.NewMsg(events.Subject("default", events.KindRegister, fmt.Sprintf("p%d", p)))
			m.Data = events.Marshal(reg)
			if err := events.SignEvent(m, kp); err != nil {
				b.Fatal(err)
			}
			if _, err := js.PublishMsgAsync(m); err != nil {
				b.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("publishes not acknowledged within a minute")
	}
	for {
		total := 0
		for _, p := range ns.PoolSummaries("default") {
			total += p.Size
		}
		if total == pools*perPool {
			return
		}
		if ctx.Err() != nil {
			b.Fatalf("%d of %d PEs in the view after a minute", total, pools*perPool)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
