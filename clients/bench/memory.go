package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// MemoryResult is the name-server memory per PE and the start-up time of
// a new replica over a loaded name space.
type MemoryResult struct {
	PEs, Pools  int
	Load        time.Duration // publishing the records until the running replica resolved the last pool
	Start       time.Duration // server.Start of the new replica until it returned (name space loaded)
	Serving     time.Duration // Start plus the first resolution of the last pool answered by the new replica
	HeapGrowth  int64         // heap after the new replica is ready, less the heap before it started (both after GC)
	RecordBytes int64         // sum of the stored records' JSON sizes (the baseline)
	Resolved    int           // PEs in the new replica's answer for the last pool
}

// BytesPerPE is the heap growth per PE.
func (m *MemoryResult) BytesPerPE() float64 { return float64(m.HeapGrowth) / float64(m.PEs) }

// RecordBytesPerPE is the stored record size per PE.
func (m *MemoryResult) RecordBytesPerPE() float64 { return float64(m.RecordBytes) / float64(m.PEs) }

// memPool names the pool i of the memory measurement.
func memPool(i int) string { return fmt.Sprintf("mem-%05d", i) }

// heapAlloc is HeapAlloc after two garbage collections.
func heapAlloc() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// measureMemory writes pes records in pes/10 pools straight into the
// default scope's bucket (raw async JetStream publishes with a TTL, as the
// registrar writes them, but without the registrar), waits until the
// running replica (answering on nc) resolves the last pool in full, then
// starts a new replica on a fresh connection made by connect and measures
// its start-up time and its heap growth. Everything shares this process:
// the baseline heap is taken after loading, so the JetStream server's and
// the running replica's memory for the data are in it; the growth includes
// the new replica's consumers and subscriptions.
func measureMemory(ctx context.Context, nc *nats.Conn, connect func(string) (*nats.Conn, error), pes int, progress func(string, ...any)) (*MemoryResult, error) {
	pools := max(1, pes/10)
	res := &MemoryResult{PEs: pes, Pools: pools}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	signer, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	subject := "$KV." + events.Bucket(events.DefaultScope) + "."
	progress("memory: writing %d PE records in %d pools into %s", pes, pools, events.Bucket(events.DefaultScope))
	start := time.Now()
	now := start.UTC()
	perPool := make([]int, pools)
	for i := range pes {
		pool := memPool(i % pools)
		perPool[i%pools]++
		id := fmt.Sprintf("pe-%07d", i)
		rec := events.Record{
			PEID: id, Pool: pool, LifetimeMS: 3600_000,
			Transports: []events.Transport{{Proto: "tcp", Addr: fmt.Sprintf("10.%d.%d.%d:7001", i>>16&255, i>>8&255, i&255)}},
			Policy:     events.PolicyParams{Name: "round_robin"},
			Signer:     signer, RegisteredAt: now, UpdatedAt: now, LastSeq: 1, Home: "bench-loader",
		}
		m := nats.NewMsg(subject + events.Key(pool, id))
		m.Data = events.Marshal(rec)
		res.RecordBytes += int64(len(m.Data))
		if _, err := js.PublishMsgAsync(m, jetstream.WithMsgTTL(2*time.Hour), waitForRoom); err != nil {
			return nil, fmt.Errorf("memory: publish: %w", err)
		}
		if i > 0 && i%(pes/4+1) == 0 {
			progress("memory: %d/%d records published", i, pes)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(120 * time.Second):
		return nil, fmt.Errorf("memory: records not stored within 120s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	last := pools - 1
	// The running replica watches the bucket too: wait until it has
	// applied everything, so that its share is in the baseline.
	if _, err := waitPool(ctx, nc, memPool(last), perPool[last], "", 120*time.Second); err != nil {
		return nil, fmt.Errorf("memory: running replica: %w", err)
	}
	res.Load = time.Since(start)
	progress("memory: %d records stored and applied by the running replica in %s", pes, res.Load.Round(time.Millisecond))

	before := heapAlloc()
	nsConn, err := connect("bench-new-replica")
	if err != nil {
		return nil, err
	}
	key, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	pub, err := key.PublicKey()
	if err != nil {
		return nil, err
	}
	progress("memory: starting a new name-server replica over %d PEs", pes)
	t0 := time.Now()
	ns, err := server.Start(ctx, nsConn, server.Config{Key: key, StartTimeout: 120 * time.Second, MaxPEsPerSigner: -1, NewPEsPerSecond: -1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, fmt.Errorf("memory: start new replica: %w", err)
	}
	defer ns.Stop()
	res.Start = time.Since(t0)
	n, err := waitPool(ctx, nc, memPool(last), perPool[last], pub, 30*time.Second)
	if err != nil {
		return nil, fmt.Errorf("memory: new replica: %w", err)
	}
	res.Serving = time.Since(t0)
	res.Resolved = n
	res.HeapGrowth = heapAlloc() - before
	runtime.KeepAlive(ns)
	progress("memory: new replica started in %s (serving %s), heap +%d B = %.0f B/PE (records %.0f B/PE)",
		res.Start.Round(time.Millisecond), res.Serving.Round(time.Millisecond), res.HeapGrowth, res.BytesPerPE(), res.RecordBytesPerPE())
	return res, nil
}

// waitPool resolves pool until an answer holds want PEs, from the replica
// with the answer key signer when signer is set (any replica otherwise),
// and returns the PEs of that answer.
func waitPool(ctx context.Context, nc *nats.Conn, pool string, want int, signer string, d time.Duration) (int, error) {
	q := events.Marshal(events.ResolveRequest{Max: want})
	subject := events.Subject(events.DefaultScope, events.KindResolve, pool)
	deadline := time.Now().Add(d)
	for {
		m, err := nc.Request(subject, q, 5*time.Second)
		if err == nil && (signer == "" || m.Header.Get(events.HeaderSigner) == signer) {
			var a events.ResolveAnswer
			if json.Unmarshal(m.Data, &a) == nil && a.Error == nil && len(a.Elements) == want {
				return len(a.Elements), nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s: no answer with %d PEs within %s", pool, want, d)
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if signer == "" {
			time.Sleep(20 * time.Millisecond)
		}
	}
}
