package chaos_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestLeaderMoveHolds: a leader of RSP_EVENTS or of the bucket that moves
// between two probes makes the replica hold lifetimes, though no probe
// failed. A step-down elects the new leader in milliseconds, as a killed
// leader's followers may: renewals published during the election were
// refused all the same, and without the hold a PE whose renewal fell into
// it lost its lifetime (seen in TestKillEventsLeader under load). Bound:
// about 5 s, 45 s at worst.
func TestLeaderMoveHolds(t *testing.T) {
	c := nstest.StartCluster(t, 3)
	nc := c.Connect(t, c.URLs(-1))
	var log nstest.SyncBuffer
	c.StartNameServer(t, c.URLs(0), server.Config{ID: "ns-1", Replicas: 3, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	// count is how many times the log says msg.
	count := func(msg string) int { return strings.Count(log.String(), msg) }
	const holding, running = `msg="holding expiry`, `msg="expiry running`
	waitRunning := func(n int) {
		t.Helper()
		if err := within(10*time.Second, func() error {
			if count(running) < n {
				return errf("expiry not running (%d times, want %d)", count(running), n)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitRunning(1) // the hold of the start ends at the first passing probe
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for i, stream := range []string{events.StreamName, "KV_" + events.Bucket("default")} {
		holds := count(holding)
		if _, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil); err != nil {
			t.Fatalf("step-down of %s: %v", stream, err)
		}
		if err := within(10*time.Second, func() error {
			if count(holding) == holds {
				return errf("no hold after the leader of %s moved", stream)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		waitRunning(i + 2)
	}
	if !strings.Contains(log.String(), "leader moved from") {
		t.Errorf("no hold names a leader that moved:\n%s", log.String())
	}
}
