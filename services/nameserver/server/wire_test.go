package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/schemas"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestWireMatchesSchemas validates what a running name server really
// sends and stores against schemas/: outcomes (accepted and refused),
// changes (add, update, remove), answers (elements and error) and records.
func TestWireMatchesSchemas(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{})
	nc := connect(t, s)
	pe := newSigner(t, nc)
	outcomes := mustSub(t, nc, "rsp.default.outcome.wire.*")
	changes := mustSub(t, nc, "rsp.default.changes.wire")
	check := func(name string, body []byte) {
		t.Helper()
		if err := schemas.Validate(name, body); err != nil {
			t.Fatalf("%s %s: %v", name, body, err)
		}
	}

	reg := registration("w-1", 1)
	reg.Meta = map[string]string{"zone": "a"}
	reg.Policy.Weight, reg.Policy.Load = 2, 0.25
	pe.register("wire", reg)
	reg.Seq, reg.Policy.Load = 2, 0.5
	pe.register("wire", reg)
	pe.register("wire", registration("w-1", 1)) // stale
	pe.deregister("wire", "w-1", 3)
	for range 4 {
		check("outcome", nextMsg(t, outcomes, 5*time.Second).Data)
	}
	for range 3 { // add, update, remove
		check("change", nextMsg(t, changes, 5*time.Second).Data)
	}

	pe.register("wire", registration("w-2", 1))
	m, err := nc.Request("rsp.default.resolve.wire", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	check("resolve_answer", m.Data)
	m, _ = nc.Request("rsp.default.resolve.none", nil, 5*time.Second)
	check("resolve_answer", m.Data)

	for _, body := range []string{"", `{"removed_after":1}`, `{"limit":1}`, `{"limit":0.5}`} {
		m, err := nc.Request("rsp.default.read.wire", []byte(body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		check("read_answer", m.Data)
	}
	m, err = nc.Request("rsp.default.pools", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	check("pools_answer", m.Data)

	js, _ := jetstream.New(nc)
	kv, _ := js.KeyValue(context.Background(), events.Bucket("default"))
	e, err := kv.Get(context.Background(), "wire.w-2")
	if err != nil {
		t.Fatal(err)
	}
	check("record", e.Value())
}
