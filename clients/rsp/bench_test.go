package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBenchEndToEnd runs a tiny `rsp bench` and checks the report.
func TestBenchEndToEnd(t *testing.T) {
	out := filepath.Join(t.TempDir(), "res")
	r := runCmd(t, exec.Command(rspBin, "bench", "--duration", "200ms", "--warmup", "50ms", "--pools", "10",
		"--clients", "1", "--policies", "round_robin", "--regs", "50", "--visible", "5", "--mem-pes", "5000", "--out", out))
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "resolve  10 PEs round_robin") {
		t.Errorf("no progress on stderr: %q", r.stderr)
	}
	md, err := os.ReadFile(filepath.Join(out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| ratio |", "echo req/s", "| 10 | round_robin | 1 |", "registrations/s", "cores (runtime.NumCPU)"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "resolution.png")); err != nil {
		t.Error(err)
	}
}
