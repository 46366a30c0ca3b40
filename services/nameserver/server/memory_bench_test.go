package server

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
)

// kvEntry is a synthetic entry of the scope's bucket.
type kvEntry struct {
	key   string
	value []byte
	rev   uint64
	op    jetstream.KeyValueOp
}

func (e kvEntry) Bucket() string                  { return "rsp_default" }
func (e kvEntry) Key() string                     { return e.key }
func (e kvEntry) Value() []byte                   { return e.value }
func (e kvEntry) Revision() uint64                { return e.rev }
func (e kvEntry) Created() time.Time              { return time.Time{} }
func (e kvEntry) Delta() uint64                   { return 0 }
func (e kvEntry) Operation() jetstream.KeyValueOp { return e.op }

// memRecord is a PE record as the registrar stores it for a PE
// registered over connection cid, with one tcp transport.
func memRecord(pool, id string, i int, signer, server string) []byte {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return events.Marshal(events.Record{
		PEID: id, Pool: pool, LifetimeMS: 30000,
		Transports:   []events.Transport{{Proto: "tcp", Addr: fmt.Sprintf("10.%d.%d.%d:7001", i>>16&255, i>>8&255, i&255)}},
		Policy:       events.PolicyParams{Name: "round_robin"},
		Signer:       signer,
		RegisteredAt: now, UpdatedAt: now, LastSeq: 1, Home: "ns-1",
		Conn: &events.Conn{Server: server, CID: uint64(i/4 + 1)},
	})
}

// BenchmarkViewMemory measures the name server's memory per PE: the heap
// after GC with 100 000 PEs in 10 000 pools applied to a view, less the
// heap before. The entries are made up front (untimed) and dropped before
// the second measurement, so only the view's share is counted.
func BenchmarkViewMemory(b *testing.B) {
	const pes, pools = 100_000, 10_000
	kp, _ := nkeys.CreateUser()
	signer, _ := kp.PublicKey()
	server := strings.Repeat("N", 56)
	for b.Loop() {
		b.StopTimer()
		before := heap()
		entries := make([]kvEntry, pes)
		for i := range entries {
			pool, id := fmt.Sprintf("pool-%05d", i%pools), fmt.Sprintf("pe-%06d", i)
			entries[i] = kvEntry{key: events.Key(pool, id), value: memRecord(pool, id, i, signer, server), rev: uint64(i + 1), op: jetstream.KeyValuePut}
		}
		b.StartTimer()
		v := newView("default", slog.New(slog.NewTextHandler(io.Discard, nil)))
		for _, e := range entries {
			v.apply(e)
		}
		b.StopTimer()
		entries = nil
		after := heap()
		runtime.KeepAlive(entries)
		if n := countPEs(v); n != pes {
			b.Fatalf("%d PEs in the view, want %d", n, pes)
		}
		b.ReportMetric(float64(after-before)/pes, "B/PE")
		runtime.KeepAlive(v)
		b.StartTimer()
	}
}

func countPEs(v *view) int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	n := 0
	for _, p := range v.pools {
		n += len(p.members)
	}
	return n
}

func heap() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// answer400 is a resolution answer of about 400 bytes (3 elements).
var answer400 = []byte(`{"scope":"default","pool":"bench","policy":"round_robin","revision":500,"elements":[` +
	`{"pe_id":"pe-0001","transports":[{"proto":"tcp","addr":"127.0.0.1:7001"}],"policy":{"name":"round_robin"}},` +
	`{"pe_id":"pe-0002","transports":[{"proto":"tcp","addr":"127.0.0.1:7001"}],"policy":{"name":"round_robin"}},` +
	`{"pe_id":"pe-0003","transports":[{"proto":"tcp","addr":"127.0.0.1:7001"}],"policy":{"name":"round_robin"}}]}`)

// BenchmarkSign measures what the Ed25519 signature of an answer costs
// alone: Sign is the bare signature over ~400 bytes, Answer all of the
// signing work of one resolution (the signed bytes and the base64).
func BenchmarkSign(b *testing.B) {
	kp, _ := nkeys.CreateUser()
	s, err := events.NewSigner(kp)
	if err != nil {
		b.Fatal(err)
	}
	msg := append([]byte("rsp.default.resolve.bench\n\n"), answer400...)
	b.Run("Sign", func(b *testing.B) {
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			_, _ = s.Sign(msg)
		}
	})
	b.Run("Answer", func(b *testing.B) {
		b.SetBytes(int64(len(answer400)))
		b.ReportAllocs()
		var sig []byte
		for b.Loop() {
			sig = s.AppendAnswerSignature(sig[:0], "rsp.default.resolve.bench", "", answer400)
		}
	})
}

// TestDecodeMaxOnly checks the fast path against events.Decode.
func TestDecodeMaxOnly(t *testing.T) {
	for _, body := range []string{`{}`, `{"max":3}`, `{"max":0}`, `{"max":128}`, `{"max":999}`, `{"max":1000}`, `{"max":03}`,
		`{"max":-1}`, `{"max": 3}`, `{"max":3,"affinity":"a"}`, `{"MAX":3}`, `{"max":3}x`, `{"max":}`, `{"max":3.0}`, `{ }`, `{"max":"3"}`} {
		var fast, slow events.ResolveRequest
		ok := decodeMaxOnly([]byte(body), &fast)
		err := events.Decode([]byte(body), &slow)
		if !ok {
			if fast.Max != 0 {
				t.Errorf("%s: refused but set max", body)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: fast path accepted what Decode refuses: %v", body, err)
		}
		fj, _ := json.Marshal(fast)
		sj, _ := json.Marshal(slow)
		if string(fj) != string(sj) {
			t.Errorf("%s: fast %s, Decode %s", body, fj, sj)
		}
	}
	for _, p := range []string{"a", "bench", "A-b_c", "-a", "_a", "", "a.b", "a b", strings.Repeat("a", 128), strings.Repeat("a", 129), "é"} {
		if got, want := validPool(p), events.CheckPool(p) == nil; got != want {
			t.Errorf("validPool(%q) = %v, CheckPool says %v", p, got, want)
		}
	}
}
