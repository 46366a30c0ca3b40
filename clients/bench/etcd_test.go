package bench

import (
	"context"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/policy"
)

// rangeOf is what a range read of pool's prefix returns for n PEs stored
// by fillEtcd: sorted by key.
func rangeOf(pool, pol string, n int) []*mvccpb.KeyValue {
	kvs := make([]*mvccpb.KeyValue, n)
	for i := range kvs {
		el := benchElement(pool, pol, i)
		kvs[i] = &mvccpb.KeyValue{Key: []byte(etcdKey(pool, el.PEID)), Value: events.Marshal(el), ModRevision: int64(i + 2)}
	}
	return kvs
}

func TestPickFromRange(t *testing.T) {
	for _, pol := range []string{"round_robin", "least_used"} {
		b, ok := policy.Get(pol)
		if !ok {
			t.Fatalf("policy %s not registered", pol)
		}
		p := b.Build()
		kvs := rangeOf("p10", pol, 10)
		var els []events.Element
		var cands []policy.Candidate
		var dst []int
		seen := map[string]bool{}
		for range 10 {
			var picked []events.Element
			var err error
			picked, els, cands, dst, err = pickFromRange(p, kvs, 3, els, cands, dst)
			if err != nil {
				t.Fatalf("%s: %v", pol, err)
			}
			if len(picked) != 3 || len(cands) != 10 {
				t.Fatalf("%s: picked %d of %d candidates, want 3 of 10", pol, len(picked), len(cands))
			}
			ids := map[string]bool{}
			for _, el := range picked {
				if ids[el.PEID] || !strings.HasPrefix(el.PEID, "p10-pe-") || el.Policy.Name != pol {
					t.Fatalf("%s: bad pick %+v", pol, picked)
				}
				ids[el.PEID] = true
				seen[el.PEID] = true
			}
			if pol == "least_used" && picked[0].Policy.Load != 0 {
				t.Fatalf("least_used picked load %v first, want 0", picked[0].Policy.Load)
			}
		}
		if pol == "round_robin" && len(seen) != 10 {
			t.Fatalf("round_robin saw %d PEs in 10 picks of 3, want all 10", len(seen))
		}
	}
	// errors: empty pool, a value that is not an element
	rr, _ := policy.Get("round_robin")
	p := rr.Build()
	if _, _, _, _, err := pickFromRange(p, nil, 3, nil, nil, nil); err == nil {
		t.Fatal("empty range: no error")
	}
	bad := []*mvccpb.KeyValue{{Key: []byte("/rsp/x/a"), Value: []byte("not json")}}
	if _, _, _, _, err := pickFromRange(p, bad, 3, nil, nil, nil); err == nil {
		t.Fatal("bad value: no error")
	}
}

func TestEtcdMeasurement(t *testing.T) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd binary not found on PATH (Debian package etcd-server): etcd measurement not tested")
	}
	if testing.Short() {
		t.Skip("starts etcd")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := Config{Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond, Pools: []int{10},
		Clients: []int{1, 4}, Policies: []string{"round_robin", "least_used"}, MaxPEs: 3, Visible: 10, Progress: io.Discard}
	res, err := measureEtcd(ctx, cfg, bin, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Resolve) != 4 {
		t.Fatalf("%d rows, want 4", len(res.Resolve))
	}
	for _, row := range res.Resolve {
		if row.Stats.Ops == 0 || row.Stats.Errors != 0 || row.Bytes == 0 {
			t.Fatalf("row %+v: want ops, no errors, bytes", row)
		}
	}
	if res.LeasePut.Ops != 10 || res.Watch.Ops != 10 || res.LeasePut.P99 == 0 || res.Watch.P99 == 0 {
		t.Fatalf("lease+put %+v, watch %+v: want 10 samples each", res.LeasePut, res.Watch)
	}
	// the report joins the rows with rsp's
	rep := &Report{Config: cfg, EtcdRun: res, Resolve: []ResolveRow{{PEs: 10, Policy: "round_robin", Clients: 1, Payload: 496,
		RSP: Stats{Ops: 100, Elapsed: time.Second}}}}
	var b strings.Builder
	rep.writeEtcd(&b)
	if !strings.Contains(b.String(), "| 10 | round_robin | 1 | 496 |") || !strings.Contains(b.String(), "lease-grant+put") {
		t.Fatalf("report:\n%s", b.String())
	}
}
