package chaos_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestRegisterThroughLeaderLoss kills the JetStream meta leader, and then
// the leader of the stream RSP_EVENTS, while 1 000 PEs (300 with -short)
// register, each with an asynchronous JetStream publish paced at about
// 250 a second; a node comes back (same data, same ports) before the next
// is killed, so a quorum always lives. A publish that fails is sent again
// with the same Nats-Msg-Id, for up to 20 s. Then, within 30 s, every
// registration whose publish was acknowledged must be in the name space,
// each PE written exactly once (the bucket stream's last sequence is the
// number of keys), no event refused, and no PE announced as added under
// two revisions.
//
// Bound: about 40 s at worst (setup 2 s, publishing with the kills about
// 6 s, the publish retries 20 s, the convergence wait 30 s, overlapping);
// 6-10 s in practice with -race on 2 cores.
func TestRegisterThroughLeaderLoss(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 300
	}
	c := nstest.StartCluster(t, 3)
	for i := range c.Size() {
		c.StartNameServer(t, c.URLs(i), server.Config{ID: fmt.Sprintf("ns-%d", i+1)})
	}
	obs := observe(t, c)

	pub := c.Connect(t, c.URLs(-1))
	js, err := jetstream.New(pub, jetstream.WithPublishAsyncTimeout(3*time.Second), jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, name := range []string{events.StreamName, "KV_" + events.Bucket("default")} {
		if r, err := streamReplicas(ctx, js, name); err != nil || r != 3 {
			t.Fatalf("%s: %d replicas (%v), want 3 (auto on a 3-node cluster)", name, r, err)
		}
	}

	kp := newKey(t)
	ids := make([]string, n)
	acked := make([]atomic.Bool, n)
	var sent, retries atomic.Int64
	var publishers sync.WaitGroup
	giveUp := time.Now().Add(20 * time.Second)
	publish := func(i int) {
		m := registrationMsg(t, kp, "chaos", ids[i], 1)
		for time.Now().Before(giveUp) {
			f, err := js.PublishMsgAsync(copyMsg(m))
			if err == nil {
				select {
				case <-f.Ok():
					acked[i].Store(true)
					return
				case <-f.Err():
				}
			}
			retries.Add(1)
			time.Sleep(250 * time.Millisecond)
		}
	}
	start := time.Now()
	go func() {
		for i := range n {
			ids[i] = fmt.Sprintf("pe-%04d", i)
			publishers.Go(func() { publish(i) })
			sent.Add(1)
			if i%10 == 9 {
				time.Sleep(40 * time.Millisecond)
			}
		}
	}()
	waitSent := func(k int64) {
		for sent.Load() < k {
			time.Sleep(10 * time.Millisecond)
		}
	}
	killAndRestart := func(what string, i int) {
		t.Helper()
		if i < 0 {
			t.Fatalf("no %s", what)
		}
		t.Logf("%.1fs: %d registrations sent; killing %s %s", time.Since(start).Seconds(), sent.Load(), what, c.Name(i))
		c.Kill(i)
		time.Sleep(300 * time.Millisecond)
		c.Restart(i)
		took := c.WaitStreamCurrent(i, account, events.StreamName, 20*time.Second)
		t.Logf("%.1fs: %s back, its %s current after %s", time.Since(start).Seconds(), c.Name(i), events.StreamName, took.Round(time.Millisecond))
	}
	waitSent(int64(n / 4))
	killAndRestart("meta leader", c.MetaLeader())
	waitSent(int64(2 * n / 3))
	killAndRestart(events.StreamName+" leader", c.StreamLeader(account, events.StreamName))
	waitSent(int64(n))
	publishers.Wait()

	var want []string
	for i := range n {
		if acked[i].Load() {
			want = append(want, events.Key("chaos", ids[i]))
		}
	}
	t.Logf("%.1fs: %d of %d publishes acknowledged, %d publishes sent again", time.Since(start).Seconds(), len(want), n, retries.Load())
	if len(want) < n*9/10 {
		t.Errorf("only %d of %d publishes acknowledged", len(want), n)
	}

	// Every acknowledged registration reaches the name space.
	check := c.Connect(t, c.URLs(-1))
	cjs, _ := jetstream.New(check)
	var keys map[string]uint64
	err = within(30*time.Second, func() error {
		lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
		defer lcancel()
		var err error
		if keys, err = bucketKeys(lctx, cjs); err != nil {
			return err
		}
		missing := 0
		for _, k := range want {
			if _, ok := keys[k]; !ok {
				missing++
			}
		}
		if missing > 0 {
			return errf("%d acknowledged registrations not in the name space", missing)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%.1fs: name space complete: %d keys", time.Since(start).Seconds(), len(keys))

	// Each PE was written once: the bucket's stream holds one message per
	// key and has stored no other.
	st, err := cjs.Stream(ctx, "KV_"+events.Bucket("default"))
	if err != nil {
		t.Fatal(err)
	}
	state := st.CachedInfo().State
	if state.Msgs != uint64(len(keys)) || state.LastSeq != uint64(len(keys)) {
		t.Errorf("bucket stream: %d messages, last sequence %d, for %d keys: some PE was written twice", state.Msgs, state.LastSeq, len(keys))
	}

	// Outcomes and changes, as far as core NATS delivered them.
	time.Sleep(200 * time.Millisecond)
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if len(obs.refused) > 0 {
		t.Errorf("%d events refused, e.g. %v", len(obs.refused), first(obs.refused))
	}
	twice := 0
	for id, revs := range obs.adds {
		if len(revs) > 1 {
			twice++
			t.Errorf("%s added under revisions %v", id, revs)
		}
		for rev := range revs {
			if keys[events.Key("chaos", id)] != rev {
				t.Errorf("%s added at revision %d, its key is at %d", id, rev, keys[events.Key("chaos", id)])
			}
		}
	}
	if len(obs.others) > 0 {
		t.Errorf("changes other than adds: %v", obs.others)
	}
	t.Logf("observed: %d accepted outcomes, %d refused, %d PEs added (none twice: %v)", len(obs.accepted), len(obs.refused), len(obs.adds), twice == 0)
}

func first(m map[string]string) string {
	for k, v := range m {
		return k + ": " + v
	}
	return ""
}
