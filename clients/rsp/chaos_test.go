package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestChaosEndToEnd runs a small `rsp chaos` (20 PEs, one fault, short
// times) as a process and checks the figures on stdout, the progress on
// stderr and the report. Bound: about 25 s; killed after 2 min.
func TestChaosEndToEnd(t *testing.T) {
	out := filepath.Join(t.TempDir(), "res")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, rspBin, "chaos", "--pes", "20", "--conns", "3", "--pus", "1", "--victims", "1",
		"--faults", "events-leader", "--down", "3s", "--settle", "4s", "--out", out)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("rsp chaos: %v (ctx %v)\nstderr:\n%s", err, ctx.Err(), stderr.String())
	}
	for _, want := range []string{"starting a 3-node cluster", "20 PEs registered", "events-leader: kill -9 of n"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	for _, want := range []string{"none (the load alone)", "events-leader (kill -9 of n", "PEs lost:", "registrations ended:",
		"failed resolutions:", "longest time without a full answer:", "killed PEs:", filepath.Join(out, "results.md")} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
	md, err := os.ReadFile(filepath.Join(out, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# rsp chaos", "| fault | node killed |", "| none |", "| events-leader | n"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	t.Logf("stdout:\n%s", stdout.String())
}

// TestChaosUsage: a fault that does not exist is a usage error.
func TestChaosUsage(t *testing.T) {
	r := runCmd(t, exec.Command(rspBin, "chaos", "--faults", "meteor"))
	wantFail(t, r, 2, "meteor", "events-leader", "none")
}
