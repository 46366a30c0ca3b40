package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	if got := Percentile(nil, 0.5); got != 0 {
		t.Errorf("empty: %v", got)
	}
	s := make([]time.Duration, 100)
	for i := range s {
		s[i] = time.Duration(100-i) * time.Microsecond // reversed: Summarize sorts
	}
	st := Summarize(s, 2, time.Second)
	if st.P50 != 50*time.Microsecond || st.P99 != 99*time.Microsecond {
		t.Errorf("p50 %v p99 %v, want 50µs 99µs", st.P50, st.P99)
	}
	if st.Ops != 100 || st.Errors != 2 || st.PerSec() != 100 {
		t.Errorf("stats %+v, %v/s", st, st.PerSec())
	}
	one := []time.Duration{7}
	if Percentile(one, 0) != 7 || Percentile(one, 1) != 7 {
		t.Error("single sample")
	}
	if Percentile([]time.Duration{1, 2}, 0.5) != 1 || Percentile([]time.Duration{1, 2}, 0.99) != 2 {
		t.Error("two samples")
	}
	if Ratio(1, 0) != 0 || Ratio(1, 2) != 0.5 {
		t.Error("ratio")
	}
}

func TestMarkdownHasBaselines(t *testing.T) {
	r := &Report{
		Machine: Machine{CPU: "Test CPU", Cores: 2, GOMAXPROCS: 2, Go: "go1.26"},
		Resolve: []ResolveRow{{PEs: 10, Policy: "round_robin", Clients: 1, Payload: 400,
			RSP:  Stats{Ops: 500, Errors: 1, Elapsed: time.Second, P50: 40 * time.Microsecond, P99: 90 * time.Microsecond},
			Echo: Stats{Ops: 1000, Elapsed: time.Second, P50: 20 * time.Microsecond, P99: 45 * time.Microsecond}}},
		Register: &RegisterResult{Regs: Stats{Ops: 100, Elapsed: time.Second}, Base: Stats{Ops: 400, Elapsed: time.Second}},
		Etcd:     "etcd not found, column skipped",
	}
	var b bytes.Buffer
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{"Test CPU", "| cores (runtime.NumCPU) | 2 |", "go1.26", "| ratio |",
		"| 10 | round_robin | 1 | 400 | 500 | 1000 | 0.50 | 40 | 20 | 90 | 45 | 2.00 | 1/0 |",
		"| registrations/s | 100 | 400 | 0.25 | 0/0 |", "etcd not found, column skipped"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if dir := t.TempDir(); true {
		files, err := r.Write(dir)
		if err != nil || len(files) != 2 {
			t.Fatalf("write: %v %v", files, err)
		}
	}
}
