package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// waitResolves polls resolution of pool until ok accepts the PE ids of the
// answer, at most within.
func waitResolves(t *testing.T, s *signer, pool string, within time.Duration, ok func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		a := resolve(t, s.nc, pool, events.ResolveRequest{Max: 100})
		got := ids(a.Elements)
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("resolution of %s: %v (error %v) after %s", pool, got, a.Error, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEventsConsumerRecreated deletes the shared events consumer under a
// running replica: its Consume ends, the replica creates the consumer
// again, and the next registration is applied. Bound: 10 s.
func TestEventsConsumerRecreated(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	pe := newSigner(t, nc)
	if out := pe.register("p", registration("a", 1)); !out.Accepted {
		t.Fatalf("outcome %+v", out)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteConsumer(ctx, events.StreamName, "rsp-nameservers-default"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// The registration is stored at once and applied once the consumer is
	// back: its outcome comes within the wait of pe.event (5 s).
	if out := pe.register("p", registration("b", 1)); !out.Accepted {
		t.Fatalf("outcome %+v", out)
	}
	t.Logf("registration applied %s after the consumer was deleted", time.Since(start).Round(time.Millisecond))
	if _, err := js.Consumer(ctx, events.StreamName, "rsp-nameservers-default"); err != nil {
		t.Fatalf("consumer not created again: %v", err)
	}
}

// TestViewWatchRestarted stalls the view's bucket watch (its ordered
// consumer is deleted on the server) and removes a key behind its back
// (a subject purge leaves no marker): the replica finds the watch behind
// the store, restarts it and re-syncs, so it resolves the PE registered
// after the stall and no longer the purged one. Bound: 10 s.
func TestViewWatchRestarted(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	pe := newSigner(t, nc)
	for _, id := range []string{"a", "b"} {
		if out := pe.register("p", registration(id, 1)); !out.Accepted {
			t.Fatalf("outcome %+v", out)
		}
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, "KV_"+events.Bucket("default"))
	if err != nil {
		t.Fatal(err)
	}
	// The watch's ordered consumer is the one that is not the expiry
	// consumer.
	deleted := 0
	for name := range stream.ConsumerNames(ctx).Name() {
		if name != "rsp-expiry" {
			if err := stream.DeleteConsumer(ctx, name); err != nil {
				t.Fatal(err)
			}
			deleted++
		}
	}
	if deleted == 0 {
		t.Fatal("no watch consumer found")
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject("$KV."+events.Bucket("default")+"."+events.Key("p", "a"))); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// The outcome waits up to a second for the stalled view, then comes
	// anyway; the view catches up after the restart.
	if out := pe.register("p", registration("c", 1)); !out.Accepted {
		t.Fatalf("outcome %+v", out)
	}
	got := waitResolves(t, pe, "p", 8*time.Second, func(got []string) bool { return strings.Join(got, ",") == "b,c" })
	t.Logf("view re-synced %s after the stall: %v", time.Since(start).Round(time.Millisecond), got)
}

// TestReplicasAuto: Config.Replicas 0 makes an R1 stream and buckets on
// a server that is not clustered, and leaves the replicas of existing
// ones alone; an explicit value is refused when out of range.
func TestReplicasAuto(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range []string{events.StreamName, "KV_" + events.Bucket("default"), "KV_" + events.ReportsBucket("default")} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 1 {
			t.Errorf("%s: %d replicas, want 1", name, r)
		}
	}
	_, err := server.Start(ctx, connect(t, s), server.Config{Replicas: 7})
	if err == nil || !strings.Contains(err.Error(), "Replicas") {
		t.Fatalf("Replicas 7: err = %v", err)
	}
	_, err = server.Start(ctx, connect(t, s), server.Config{Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "replicas") {
		t.Fatalf("Replicas 3 on one server: err = %v", err)
	}
	t.Log(fmt.Sprint(err))
}
