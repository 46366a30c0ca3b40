package chaos_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestReplicasOnCluster: on a three-node cluster, a replica with
// Replicas 1 makes the stream and buckets R1; one with Replicas 0 (auto)
// leaves existing ones as they are; one with Replicas 3 scales them all
// to R3. Bound: about 3 s, 30 s at worst.
func TestReplicasOnCluster(t *testing.T) {
	c := nstest.StartCluster(t, 3)
	nc := c.Connect(t, c.URLs(-1))
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names := []string{events.StreamName, "KV_" + events.Bucket("default"), "KV_" + events.ReportsBucket("default")}
	want := func(r int) {
		t.Helper()
		for _, name := range names {
			if got, err := streamReplicas(ctx, js, name); err != nil || got != r {
				t.Fatalf("%s: %d replicas (%v), want %d", name, got, err, r)
			}
		}
	}
	c.StartNameServer(t, c.URLs(0), server.Config{ID: "ns-1", Replicas: 1})
	want(1)
	c.StartNameServer(t, c.URLs(1), server.Config{ID: "ns-2"})
	want(1)
	c.StartNameServer(t, c.URLs(2), server.Config{ID: "ns-3", Replicas: 3})
	want(3)
}
