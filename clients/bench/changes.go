package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
)

// ChangesResult is change-notification latency: from the publish of a
// registration until a subscriber of rsp.<scope>.changes.<pool> receives
// the add (a new PE) or the update (a re-registration of it with another
// load), next to a bare NATS publish→subscribe of the same message
// (headers and body) on the same server.
type ChangesResult struct {
	Add, Update, Base Stats
	Payload           int // registration body bytes, the same for the baseline
}

// signedRegistration is a signed registration of PE id with sequence seq.
func signedRegistration(kp nkeys.KeyPair, pool, id string, seq uint64, load float64) (*nats.Msg, error) {
	reg := events.Registration{
		PEID: id, Seq: seq, Time: time.Now().UTC(), LifetimeMS: 3600_000,
		Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7001"}},
		Policy:     events.PolicyParams{Name: "round_robin", Load: load},
	}
	m := nats.NewMsg(events.Subject(events.DefaultScope, events.KindRegister, pool))
	m.Data = events.Marshal(reg)
	if err := events.SignEvent(m, kp); err != nil {
		return nil, err
	}
	m.Header.Set(events.HeaderMsgID, events.MsgID(reg.PEID, reg.Seq))
	return m, nil
}

// measureChanges takes n samples each of add and update notification
// latency, one after the other: pub publishes the registrations, sub
// (another connection, like a separate watcher) receives the changes.
// Then n bare publishes from pub to a subscriber on sub of the same
// messages on a plain subject.
func measureChanges(ctx context.Context, pub, sub *nats.Conn, n int, progress func(string, ...any)) (*ChangesResult, error) {
	const pool = "chg"
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(pub)
	if err != nil {
		return nil, err
	}
	type got struct {
		op, id string
		at     time.Time
	}
	ch := make(chan got, 64)
	s, err := sub.Subscribe(events.Subject(events.DefaultScope, events.KindChanges, pool), func(m *nats.Msg) {
		at := time.Now()
		var c events.Change
		if json.Unmarshal(m.Data, &c) == nil {
			ch <- got{c.Op, c.PEID, at}
		}
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = s.Unsubscribe() }()
	if err := sub.Flush(); err != nil {
		return nil, err
	}
	wait := func(op, id string) (time.Time, error) {
		timeout := time.After(10 * time.Second)
		for {
			select {
			case g := <-ch:
				if g.op == op && g.id == id {
					return g.at, nil
				}
			case <-timeout:
				return time.Time{}, fmt.Errorf("no %s of %s within 10s", op, id)
			case <-ctx.Done():
				return time.Time{}, ctx.Err()
			}
		}
	}
	once := func(m *nats.Msg, op, id string) (time.Duration, error) {
		t0 := time.Now()
		if _, err := js.PublishMsgAsync(m, waitForRoom); err != nil {
			return 0, err
		}
		at, err := wait(op, id)
		if err != nil {
			return 0, err
		}
		return at.Sub(t0), nil
	}
	res := &ChangesResult{}
	progress("change notifications: %d adds and %d updates", n, n)
	var addLat, updLat []time.Duration
	addErrs, updErrs := 0, 0
	start := time.Now()
	var sample *nats.Msg
	for i := range n {
		id := fmt.Sprintf("c-%d", i)
		m, err := signedRegistration(kp, pool, id, 1, 0)
		if err != nil {
			return nil, err
		}
		if sample == nil {
			sample = m
			res.Payload = len(m.Data)
		}
		if d, err := once(m, events.OpAdd, id); err != nil {
			addErrs++
		} else {
			addLat = append(addLat, d)
		}
		if m, err = signedRegistration(kp, pool, id, 2, 0.5); err != nil {
			return nil, err
		}
		if d, err := once(m, events.OpUpdate, id); err != nil {
			updErrs++
		} else {
			updLat = append(updLat, d)
		}
	}
	el := time.Since(start)
	res.Add = Summarize(addLat, addErrs, el)
	res.Update = Summarize(updLat, updErrs, el)

	// The baseline: the same message, bare publish to a bare subscriber.
	bch := make(chan time.Time, 1)
	bs, err := sub.Subscribe("bench.changes.base", func(*nats.Msg) { bch <- time.Now() })
	if err != nil {
		return nil, err
	}
	defer func() { _ = bs.Unsubscribe() }()
	if err := sub.Flush(); err != nil {
		return nil, err
	}
	var baseLat []time.Duration
	baseErrs := 0
	start = time.Now()
	if sample != nil {
		for range n {
			m := &nats.Msg{Subject: "bench.changes.base", Header: sample.Header, Data: sample.Data}
			t0 := time.Now()
			if err := pub.PublishMsg(m); err != nil {
				baseErrs++
				continue
			}
			select {
			case at := <-bch:
				baseLat = append(baseLat, at.Sub(t0))
			case <-time.After(5 * time.Second):
				baseErrs++
			}
		}
	}
	res.Base = Summarize(baseLat, baseErrs, time.Since(start))
	progress("change notifications: add p50 %s p99 %s, update p50 %s p99 %s, bare publish→subscribe p50 %s p99 %s, errors %d/%d/%d",
		res.Add.P50, res.Add.P99, res.Update.P50, res.Update.P99, res.Base.P50, res.Base.P99, res.Add.Errors, res.Update.Errors, res.Base.Errors)
	return res, nil
}

// Targets of issue 7 reported here.
const (
	targetVisibleP99 = 20 * time.Millisecond
	targetBytesPerPE = 2048
)

func metStr(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

// writeChangesMemory writes the change-notification and memory sections.
func (r *Report) writeChangesMemory(b *strings.Builder) {
	if rr := r.Register; rr != nil && rr.Visible.Ops > 0 {
		fmt.Fprintf(b, "Target register-to-visible p99 ≤ %s: %s (p99 %s µs).\n\n", targetVisibleP99,
			metStr(rr.Visible.Errors == 0 && rr.Visible.P99 <= targetVisibleP99), us(rr.Visible.P99))
	}
	if c := r.Changes; c != nil {
		fmt.Fprintf(b, "## Change notifications vs. bare NATS publish→subscribe\n\n")
		fmt.Fprintf(b, "From the publish of a signed registration (%d-byte body) until a subscriber of `rsp.default.changes.<pool>` "+
			"on another connection receives the add (new PE) or the update (re-registration with another load), one at a time; "+
			"baseline: a bare NATS publish of the same message (headers and body) from the same connection to a subscriber "+
			"on the same other connection. ratio = rsp / baseline.\n\n", c.Payload)
		fmt.Fprintf(b, "| measurement | samples | rsp p50 µs | rsp p99 µs | baseline p50 µs | baseline p99 µs | p99 ratio | errors rsp/baseline |\n")
		fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, row := range []struct {
			name string
			s    Stats
		}{{"add notification", c.Add}, {"update notification", c.Update}} {
			fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %.2f | %d/%d |\n", row.name, row.s.Ops, us(row.s.P50), us(row.s.P99),
				us(c.Base.P50), us(c.Base.P99), Ratio(float64(row.s.P99), float64(c.Base.P99)), row.s.Errors, c.Base.Errors)
		}
		b.WriteString("\n")
	}
	if m := r.Memory; m != nil {
		fmt.Fprintf(b, "## Name-server memory per PE and replica start-up\n\n")
		fmt.Fprintf(b, "%d PE records in %d pools written straight into the bucket (raw async JetStream publishes with a TTL, "+
			"as the registrar writes them) and applied by the running replica (%s). Then a new replica starts on a fresh "+
			"connection (`server.Start`, which returns once the name space is loaded). Heap: HeapAlloc after GC just before "+
			"the start, less HeapAlloc after GC once the new replica answers; everything shares one process, so the JetStream "+
			"server's and the first replica's memory for the data are in the baseline, and the figure includes the new "+
			"replica's consumers and subscriptions. Baseline: the stored records' JSON bytes per PE.\n\n",
			m.PEs, m.Pools, m.Load.Round(time.Millisecond))
		fmt.Fprintf(b, "| measurement | rsp | baseline | ratio | target |\n|---|---:|---:|---:|---|\n")
		fmt.Fprintf(b, "| name-server heap per PE (B) | %.0f | %.0f (record JSON) | %.2f | ≤ %d: %s |\n", m.BytesPerPE(), m.RecordBytesPerPE(),
			Ratio(m.BytesPerPE(), m.RecordBytesPerPE()), targetBytesPerPE, metStr(m.BytesPerPE() > 0 && m.BytesPerPE() <= targetBytesPerPE))
		fmt.Fprintf(b, "| new replica: Start returned (ms) | %.0f | | | |\n", float64(m.Start.Microseconds())/1e3)
		fmt.Fprintf(b, "| new replica: answered the last pool with all %d PEs (ms) | %.0f | | | |\n", m.Resolved, float64(m.Serving.Microseconds())/1e3)
		b.WriteString("\n")
	}
}
