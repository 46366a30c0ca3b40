package chaos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
)

// account holds every stream of the insecure servers of these tests.
const account = natsserver.DEFAULT_GLOBAL_ACCOUNT

// registrationMsg is PE id's signed registration in pool with seq and a
// 10-minute lifetime (nothing expires during a test), as the client
// library sends it: Nats-Msg-Id <pe_id>-<seq>.
func registrationMsg(t testing.TB, kp nkeys.KeyPair, pool, id string, seq uint64) *nats.Msg {
	t.Helper()
	reg := events.Registration{
		PEID: id, Seq: seq, Time: time.Now().UTC(), LifetimeMS: 600_000,
		Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7001"}},
		Policy:     events.PolicyParams{Name: "round_robin"},
	}
	m := nats.NewMsg(events.Subject("default", events.KindRegister, pool))
	m.Data = events.Marshal(reg)
	if err := events.SignEvent(m, kp); err != nil {
		t.Fatal(err)
	}
	m.Header.Set(events.HeaderMsgID, events.MsgID(id, seq))
	return m
}

// copyMsg is a fresh copy of m to publish again (a publish sets Reply).
func copyMsg(m *nats.Msg) *nats.Msg {
	c := nats.NewMsg(m.Subject)
	c.Data = m.Data
	for k, v := range m.Header {
		c.Header[k] = append([]string(nil), v...)
	}
	return c
}

func newKey(t testing.TB) nkeys.KeyPair {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// observer collects the outcomes and changes of scope default as seen on
// every node of the cluster (one connection per node, so a node that dies
// does not blind it), without duplicates.
type observer struct {
	mu       sync.Mutex
	accepted map[string]bool              // pe_id → an accepted outcome came
	refused  map[string]string            // pe_id → the refusal
	adds     map[string]map[uint64]bool   // pe_id → revisions of add changes
	others   map[string]map[string]uint64 // pe_id → op/reason → revision of other changes
}

func observe(t testing.TB, c *nstest.Cluster) *observer {
	t.Helper()
	o := &observer{accepted: map[string]bool{}, refused: map[string]string{},
		adds: map[string]map[uint64]bool{}, others: map[string]map[string]uint64{}}
	for i := range c.Size() {
		nc := c.Connect(t, c.URL(i))
		if _, err := nc.Subscribe("rsp.default.outcome.>", func(m *nats.Msg) {
			var out events.Outcome
			if json.Unmarshal(m.Data, &out) != nil {
				return
			}
			o.mu.Lock()
			defer o.mu.Unlock()
			if out.Accepted {
				o.accepted[out.PEID] = true
			} else if out.Error != nil {
				o.refused[out.PEID] = out.Error.Error()
			}
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Subscribe("rsp.default.changes.>", func(m *nats.Msg) {
			var ch events.Change
			if json.Unmarshal(m.Data, &ch) != nil {
				return
			}
			o.mu.Lock()
			defer o.mu.Unlock()
			if ch.Op == events.OpAdd {
				if o.adds[ch.PEID] == nil {
					o.adds[ch.PEID] = map[uint64]bool{}
				}
				o.adds[ch.PEID][ch.Revision] = true
				return
			}
			if o.others[ch.PEID] == nil {
				o.others[ch.PEID] = map[string]uint64{}
			}
			o.others[ch.PEID][ch.Op+"/"+ch.Reason] = ch.Revision
		}); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

// bucketKeys lists the keys of the name space of scope default with their
// revisions.
func bucketKeys(ctx context.Context, js jetstream.JetStream) (map[string]uint64, error) {
	kv, err := js.KeyValue(ctx, events.Bucket("default"))
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(ctx, jetstream.MetaOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	keys := map[string]uint64{}
	for {
		select {
		case e := <-w.Updates():
			if e == nil {
				return keys, nil
			}
			keys[e.Key()] = e.Revision()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// within runs f every 50 ms until it returns nil, at most d; the last
// error otherwise.
func within(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func streamReplicas(ctx context.Context, js jetstream.JetStream, name string) (int, error) {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return 0, err
	}
	return st.CachedInfo().Config.Replicas, nil
}

func errf(format string, args ...any) error { return fmt.Errorf(format, args...) }
