package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// attemptTimeout and the one retry are the client's side of the bound in
// TestResolveWhileReplicasDie: a request that gets no answer within
// attemptTimeout (or "no responders") is sent once more at once; only
// when that fails too does the resolution count as failed.
const attemptTimeout = 200 * time.Millisecond

// TestResolveWhileReplicasDie runs a name-server replica on each node of
// the cluster and four requesters (on connections to different nodes)
// resolving a 20-PE pool in a loop, then kills the replicas one after
// another, 700 ms apart, as a crash would (connection closed, requests in
// flight lost), and finally starts a new one. Each resolution may try
// twice (attemptTimeout, above). While at least one replica lives, no
// resolution may fail; failures are expected, and only counted, in the
// window in which none lives (a resolution counts there when that window
// overlaps it). After the new replica starts, resolution answers again.
//
// Bound: about 5 s (setup 1 s, three kills 2.1 s, 500 ms without
// replicas, the new replica and 1 s of answers), 30 s at worst.
func TestResolveWhileReplicasDie(t *testing.T) {
	c := nstest.StartCluster(t, 3)
	type replica struct {
		nc *nats.Conn
		ns *server.NameServer
	}
	startReplica := func(i int) replica {
		t.Helper()
		nc := c.Connect(t, c.URLs(i))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ns, err := server.Start(ctx, nc, server.Config{ID: fmt.Sprintf("ns-%d", i+1), Logger: nstest.Logger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ns.Stop)
		return replica{nc, ns}
	}
	var replicas []replica
	for i := range c.Size() {
		replicas = append(replicas, startReplica(i))
	}
	var live atomic.Int32
	live.Store(int32(len(replicas)))
	// deadEpoch counts the starts of windows without replicas; a
	// resolution that saw it change overlapped such a window.
	var deadEpoch atomic.Int32
	// okAfterNew counts the answers after the new replica started.
	var renewed atomic.Bool
	var okAfterNew atomic.Int64

	// A pool of 20 PEs, through the stream like any registration.
	pub := c.Connect(t, c.URLs(-1))
	js, _ := jetstream.New(pub)
	kp := newKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 20 {
		if _, err := js.PublishMsg(ctx, registrationMsg(t, kp, "svc", fmt.Sprintf("pe-%02d", i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := within(10*time.Second, func() error {
		m, err := pub.Request(events.Subject("default", events.KindResolve, "svc"), []byte(`{"max":100}`), time.Second)
		if err != nil {
			return err
		}
		var a events.ResolveAnswer
		if err := events.Decode(m.Data, &a); err != nil || len(a.Elements) != 20 {
			return errf("answer %s (%v)", m.Data, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	type result struct {
		ok, failed, failedDead, retried int
	}
	results := make([]result, 4)
	stop := make(chan struct{})
	var requesters sync.WaitGroup
	for r := range results {
		nc := c.Connect(t, c.URL(r%c.Size()))
		requesters.Go(func() {
			res := &results[r]
			for {
				select {
				case <-stop:
					return
				default:
				}
				epoch, liveBefore := deadEpoch.Load(), live.Load()
				var err error
				for attempt := range 2 {
					var m *nats.Msg
					m, err = nc.Request(events.Subject("default", events.KindResolve, "svc"), nil, attemptTimeout)
					if err == nil {
						var a events.ResolveAnswer
						if err = events.Decode(m.Data, &a); err == nil && len(a.Elements) != 3 {
							err = errf("answer %s", m.Data)
						}
					}
					if err == nil || !(errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout)) {
						break
					}
					if attempt == 0 {
						res.retried++
					}
				}
				switch {
				case err == nil:
					res.ok++
					if renewed.Load() {
						okAfterNew.Add(1)
					}
				case liveBefore == 0 || live.Load() == 0 || deadEpoch.Load() != epoch:
					res.failedDead++
					time.Sleep(10 * time.Millisecond) // no replica: do not spin
				default:
					res.failed++
					t.Errorf("resolution failed while a replica lived: %v", err)
				}
			}
		})
	}

	start := time.Now()
	for i, r := range replicas {
		time.Sleep(700 * time.Millisecond)
		if live.Load() == 1 {
			deadEpoch.Add(1)
		}
		live.Add(-1)
		r.nc.Close() // a crash: its subscriptions and the requests it held are gone
		r.ns.Stop()
		t.Logf("%.1fs: replica %d killed, %d live", time.Since(start).Seconds(), i+1, live.Load())
	}
	time.Sleep(500 * time.Millisecond)
	replicas = append(replicas, startReplica(0))
	live.Add(1)
	renewed.Store(true)
	t.Logf("%.1fs: a new replica started", time.Since(start).Seconds())
	time.Sleep(time.Second)
	close(stop)
	requesters.Wait()

	var total result
	for _, r := range results {
		total.ok += r.ok
		total.failed += r.failed
		total.failedDead += r.failedDead
		total.retried += r.retried
	}
	t.Logf("resolutions: %d answered (%d after the new replica started), %d retried once, %d failed while a replica lived, %d failed with none",
		total.ok, okAfterNew.Load(), total.retried, total.failed, total.failedDead)
	if okAfterNew.Load() == 0 {
		t.Errorf("no answer after the new replica started")
	}
	if total.failedDead == 0 {
		t.Errorf("no resolution failed while no replica lived: the test does not see failures")
	}
	for r, res := range results {
		if res.ok == 0 {
			t.Errorf("requester %d got no answer", r)
		}
	}
}
