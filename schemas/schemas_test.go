package schemas

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
)

var now = time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC)

func registration() events.Registration {
	return events.Registration{
		PEID:       "echo-1",
		Seq:        42,
		Time:       now,
		LifetimeMS: 1500,
		Transports: []events.Transport{
			{Proto: "tcp", Addr: "127.0.0.1:7001"},
			{Proto: "udp", Addr: "[::1]:7001"},
			{Proto: "sctp", Addr: "pe.example:9"},
			{Proto: "http", Addr: "http://127.0.0.1:8080/echo"},
			{Proto: "nats", Subject: "svc.echo.1"},
		},
		Policy: events.PolicyParams{Name: "least_used_degradation", Weight: 3, Priority: 2, Load: 0.25, Degradation: 0.01, LoadIncrement: 1},
		Meta:   map[string]string{"zone": "a"},
	}
}

func element() events.Element {
	r := registration()
	return events.Element{PEID: r.PEID, Transports: r.Transports, Policy: r.Policy, Meta: r.Meta}
}

func signer(t *testing.T) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func TestNames(t *testing.T) {
	want := []string{"change", "deregistration", "failure_report", "monitor_change", "monitor_snapshot", "monitor_stats", "nameserver_beat", "outcome", "pools_answer", "read_answer", "read_request", "record", "registration", "reports", "resolve_answer", "resolve_request", "tombstone"}
	got := Names()
	if !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	got[0] = "mutated"
	if Names()[0] != "change" {
		t.Fatal("Names() returns a slice that aliases the package's state")
	}
	for _, n := range append(want, "common") {
		b, err := Schema(n)
		if err != nil {
			t.Fatalf("Schema(%q): %v", n, err)
		}
		var doc struct {
			Schema string `json:"$schema"`
			ID     string `json:"$id"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s.json: %v", n, err)
		}
		if doc.Schema != "https://json-schema.org/draft/2020-12/schema" || doc.ID != BaseURL+n+".json" {
			t.Errorf("%s.json: $schema %q, $id %q", n, doc.Schema, doc.ID)
		}
	}
}

func TestUnknownSchema(t *testing.T) {
	for _, n := range []string{"", "common", "registrations", "Registration"} {
		if err := Validate(n, []byte(`{}`)); err == nil || !strings.Contains(err.Error(), "no schema") {
			t.Errorf("Validate(%q) = %v, want a 'no schema' error", n, err)
		}
	}
}

// TestEventsMessages validates messages built and encoded by the events package.
func TestEventsMessages(t *testing.T) {
	reg := registration()
	minimal := events.Registration{PEID: "e", Seq: 1, Time: now, Transports: []events.Transport{{Proto: "tcp", Addr: ":1"}}, Policy: events.PolicyParams{Name: "round_robin"}}
	el := element()
	rec := events.Record{
		PEID: reg.PEID, Pool: "echo", LifetimeMS: reg.LifetimeMS, Transports: reg.Transports, Policy: reg.Policy, Meta: reg.Meta,
		Signer: signer(t), RegisteredAt: now, UpdatedAt: now.Add(time.Second), LastSeq: 42, Home: "ns-1",
	}
	withConn := reg
	withConn.Conn = &events.Conn{Server: "NDFEZC5NHKVDAYPBBUWT7FLGWRRSHLEBAT6TWG4VDPIBGXDPGGLSYHX7", CID: 10}
	recConn := rec
	recConn.Conn = withConn.Conn
	cases := []struct {
		schema string
		msg    any
	}{
		{"registration", reg},
		{"registration", withConn},
		{"record", recConn},
		{"reports", events.Reports{signer(t): now, signer(t): now.Add(-time.Second)}},
		{"reports", events.Reports{}},
		{"registration", &minimal},
		{"deregistration", events.Deregistration{PEID: "echo-1", Seq: 43, Time: now}},
		{"failure_report", events.FailureReport{PEID: "echo-1", Time: now, Reason: "connect refused"}},
		{"failure_report", events.FailureReport{PEID: "echo-1", Time: now}},
		{"outcome", events.Outcome{PEID: "echo-1", Seq: 42, Accepted: true}},
		{"outcome", events.Outcome{PEID: "echo-1", Seq: 42, Error: &events.Error{Code: events.CodeForbidden, Message: "echo-1 belongs to another signer"}}},
		{"outcome", events.Outcome{PEID: "echo-1", Seq: 0, Error: &events.Error{Code: events.CodeBadRequest, Message: "seq: must be an integer ≥ 1"}}},
		{"record", rec},
		{"tombstone", events.Tombstone{PEID: "echo-1", Pool: "echo", Signer: signer(t), LastSeq: 43, Reason: events.ReasonDeregistered, RemovedAt: now}},
		{"record", rec.Element()},
		{"resolve_request", events.ResolveRequest{}},
		{"resolve_request", events.ResolveRequest{Max: 128, Exclude: []string{"echo-3", "echo-4"}, Affinity: "echo-1", Hint: map[string]string{"zone": "a"}}},
		{"resolve_answer", events.ResolveAnswer{Scope: "default", Pool: "echo", Policy: "round_robin", Revision: 1234, Elements: []events.Element{el, {PEID: "echo-2", Transports: []events.Transport{{Proto: "nats", Subject: "x"}}, Policy: events.PolicyParams{Name: "round_robin"}}}}},
		{"resolve_answer", events.ResolveAnswer{Scope: "default", Pool: "echo", Policy: "round_robin"}},
		{"resolve_answer", events.ResolveAnswer{Error: &events.Error{Code: events.CodeNotFound, Message: "no pool echo in scope default"}}},
		{"read_request", events.ReadRequest{}},
		{"read_request", events.ReadRequest{After: "echo-1", Limit: 500, RemovedAfter: 1200}},
		{"read_answer", events.ReadAnswer{Scope: "default", Pool: "echo", Revision: 1240, Records: []events.ReadRecord{{Revision: 1234, Added: 1001, Record: rec}},
			Removed: []events.Removal{{PEID: "echo-9", Revision: 1239, Reason: events.ReasonFailed}}, Next: "echo-1"}},
		{"read_answer", events.ReadAnswer{Scope: "default", Pool: "empty"}},
		{"read_answer", events.ReadAnswer{Error: &events.Error{Code: events.CodeBadRequest, Message: "limit: 501 is not in 1..500"}}},
		{"pools_answer", events.PoolsAnswer{Scope: "default", Revision: 1240, Pools: []events.PoolInfo{{Pool: "echo", Policy: "round_robin", Size: 3, Revision: 1240}}}},
		{"pools_answer", events.PoolsAnswer{Scope: "default"}},
		{"change", events.Change{Scope: "default", Pool: "echo", Revision: 1235, Op: events.OpAdd, PEID: "echo-1", Reason: events.ReasonRegistered, Element: &el}},
		{"change", events.Change{Scope: "default", Pool: "echo", Revision: 1236, Op: events.OpUpdate, PEID: "echo-1", Reason: events.ReasonUpdated, Element: &el}},
		{"change", events.Change{Scope: "default", Pool: "echo", Revision: 1237, Op: events.OpRemove, PEID: "echo-1", Reason: events.ReasonDeregistered, Element: &el}},
		{"change", events.Change{Scope: "default", Pool: "echo", Revision: 1238, Op: events.OpRemove, PEID: "echo-1", Reason: events.ReasonExpired}},
		{"nameserver_beat", events.NameServerBeat{ID: "ns-1", Scope: "default", Time: now, StartedAt: now.Add(-time.Hour), Key: signer(t),
			Pools: 2, PEs: 7, Resolutions: map[string]uint64{"echo": 1234}}},
		{"nameserver_beat", events.NameServerBeat{ID: "ns-1", Scope: "default", Time: now, StartedAt: now, Key: signer(t),
			Resolutions: map[string]uint64{}, Stopping: true}},
	}
	// The record case above validates rec.Element() against record: it must fail.
	for i, c := range cases {
		body := events.Marshal(c.msg)
		err := Validate(c.schema, body)
		if _, isElement := c.msg.(events.Element); isElement {
			if err == nil {
				t.Errorf("case %d: an element is not a record, but %s validated it: %s", i, c.schema, body)
			}
			continue
		}
		if err != nil {
			t.Errorf("case %d: %s rejects %s:\n%v", i, c.schema, body, err)
		}
	}
	// Every change reason validates.
	for _, r := range []string{events.ReasonRegistered, events.ReasonUpdated, events.ReasonDeregistered, events.ReasonExpired, events.ReasonFailed, events.ReasonDisconnected} {
		body := events.Marshal(events.Change{Scope: "s", Pool: "p", Revision: 1, Op: events.OpRemove, PEID: "e", Reason: r})
		if err := Validate("change", body); err != nil {
			t.Errorf("reason %s: %v", r, err)
		}
	}
	// Every error code validates.
	for _, code := range []string{events.CodeBadRequest, events.CodeForbidden, events.CodeConflict, events.CodeStale, events.CodeUnavailable, events.CodeNotFound} {
		body := events.Marshal(events.ResolveAnswer{Error: &events.Error{Code: code, Message: "m"}})
		if err := Validate("resolve_answer", body); err != nil {
			t.Errorf("code %s: %v", code, err)
		}
	}
}

// TestRefusalOutcomes validates the outcomes a name server sends for
// events whose pe_id is missing or breaks the PE id rule: such an event is
// refused bad_request, and its outcome echoes pe_id and seq as far as the
// body could be read (as the registrar's peIDAndSeq reads them), so pe_id
// may be "" or the invalid string (it goes to rsp.<scope>.outcome.<pool>._).
func TestRefusalOutcomes(t *testing.T) {
	reg := registration()
	bodies := map[string][]byte{
		"missing pe_id":  mutate(t, reg, func(m map[string]any) { delete(m, "pe_id") }),
		"empty pe_id":    mutate(t, reg, func(m map[string]any) { m["pe_id"] = "" }),
		"pe_id with dot": mutate(t, reg, func(m map[string]any) { m["pe_id"] = "echo.1" }),
		"pe_id -echo":    mutate(t, reg, func(m map[string]any) { m["pe_id"] = "-echo" }),
		"pe_id with >":   mutate(t, reg, func(m map[string]any) { m["pe_id"] = "a > b" }),
		"pe_id 65 chars": mutate(t, reg, func(m map[string]any) { m["pe_id"] = strings.Repeat("a", 65) }),
		"pe_id a number": mutate(t, reg, func(m map[string]any) { m["pe_id"] = 7 }),
		"seq missing":    mutate(t, reg, func(m map[string]any) { m["pe_id"] = "a.b"; delete(m, "seq") }),
		"not JSON":       []byte(`{"pe_id":`),
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			// What the name server echoes (registrar.peIDAndSeq).
			var echo struct {
				PEID string `json:"pe_id"`
				Seq  uint64 `json:"seq"`
			}
			_ = json.Unmarshal(body, &echo)
			// Why it refuses: the body does not decode or validate.
			var r events.Registration
			err := events.Decode(body, &r)
			if err == nil {
				err = r.Validate(now, time.Minute)
			}
			if err == nil {
				t.Fatalf("events accepts %s", body)
			}
			out := events.Marshal(events.Outcome{PEID: echo.PEID, Seq: echo.Seq, Error: &events.Error{Code: events.CodeBadRequest, Message: err.Error()}})
			if err := Validate("outcome", out); err != nil {
				t.Errorf("outcome rejects the refusal %s:\n%v", out, err)
			}
			// An accepted outcome must name a valid PE id.
			if echo.PEID != "" || name == "empty pe_id" || name == "missing pe_id" {
				acc := events.Marshal(events.Outcome{PEID: echo.PEID, Seq: 1, Accepted: true})
				if err := Validate("outcome", acc); err == nil || !strings.Contains(err.Error(), "/pe_id") {
					t.Errorf("outcome accepts %s (err %v)", acc, err)
				}
			}
		})
	}
}

// TestProtocolExamples validates the JSON examples of protocol.md verbatim.
func TestProtocolExamples(t *testing.T) {
	cases := []struct{ schema, body string }{
		{"registration", `{
  "pe_id": "echo-1",
  "seq": 42,
  "time": "2026-11-25T10:00:00.000Z",
  "lifetime_ms": 5000,
  "transports": [{"proto": "tcp", "addr": "127.0.0.1:7001"}],
  "policy": {"name": "round_robin", "weight": 1, "load": 0.0},
  "meta": {"zone": "a"}
}`},
		{"outcome", `{"pe_id": "echo-1", "seq": 42, "accepted": true}`},
		{"outcome", `{"pe_id": "echo-1", "seq": 42, "accepted": false, "error": {"code": "forbidden", "message": "..."}}`},
		{"resolve_request", `{"max": 5, "exclude": ["echo-3"], "affinity": "echo-1", "hint": {"zone": "a"}}`},
		{"resolve_request", ``},
		{"resolve_answer", `{"error": {"code": "not_found", "message": "no pool echo in scope default"}}`},
	}
	for _, c := range cases {
		if err := Validate(c.schema, []byte(c.body)); err != nil {
			t.Errorf("%s rejects the protocol example %s:\n%v", c.schema, c.body, err)
		}
	}
	// The examples decode into the events types, too.
	var r events.Registration
	if err := events.Decode([]byte(cases[0].body), &r); err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(r.Time, time.Second); err != nil {
		t.Fatalf("events rejects the protocol example: %v", err)
	}
}

// TestUnknownFieldsAllowed: readers ignore unknown fields, so the schemas allow them.
func TestUnknownFieldsAllowed(t *testing.T) {
	cases := []struct{ schema, body string }{
		{"registration", `{"pe_id":"a","seq":1,"time":"2026-01-01T00:00:00Z","transports":[{"proto":"tcp","addr":"h:1","x":1}],"policy":{"name":"random","x":[]},"future":{"a":1}}`},
		{"deregistration", `{"pe_id":"a","seq":1,"time":"2026-01-01T00:00:00Z","future":true}`},
		{"outcome", `{"pe_id":"a","seq":1,"accepted":true,"server":"ns-1"}`},
		{"resolve_request", `{"future":1}`},
		{"change", `{"scope":"s","pool":"p","revision":1,"op":"remove","pe_id":"a","reason":"failed","reporters":3}`},
	}
	for _, c := range cases {
		if err := Validate(c.schema, []byte(c.body)); err != nil {
			t.Errorf("%s rejects unknown fields in %s:\n%v", c.schema, c.body, err)
		}
	}
}

// mutate returns the JSON encoding of v with f applied to its generic form.
func mutate(t *testing.T, v any, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(events.Marshal(v), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	return events.Marshal(m)
}

func TestInvalid(t *testing.T) {
	reg := registration()
	tr := func(m map[string]any, i int) map[string]any { return m["transports"].([]any)[i].(map[string]any) }
	pol := func(m map[string]any) map[string]any { return m["policy"].(map[string]any) }
	el := element()
	change := events.Change{Scope: "default", Pool: "echo", Revision: 1, Op: events.OpAdd, PEID: "echo-1", Reason: events.ReasonRegistered, Element: &el}
	rec := events.Record{PEID: "echo-1", Pool: "echo", LifetimeMS: 5000, Transports: reg.Transports, Policy: reg.Policy, Signer: signer(t), RegisteredAt: now, UpdatedAt: now, LastSeq: 1, Home: "ns-1"}
	cases := []struct {
		name, schema string
		body         []byte
		where        string // JSON pointer the error must mention
	}{
		{"bad pe_id", "registration", mutate(t, reg, func(m map[string]any) { m["pe_id"] = "-echo" }), "/pe_id"},
		{"pe_id with dot", "registration", mutate(t, reg, func(m map[string]any) { m["pe_id"] = "echo.1" }), "/pe_id"},
		{"pe_id of 65 chars", "deregistration", mutate(t, events.Deregistration{PEID: strings.Repeat("a", 65), Seq: 1, Time: now}, func(map[string]any) {}), "/pe_id"},
		{"empty pe_id", "failure_report", mutate(t, events.FailureReport{Time: now}, func(map[string]any) {}), "/pe_id"},
		{"seq 0", "registration", mutate(t, reg, func(m map[string]any) { m["seq"] = 0 }), "/seq"},
		{"seq 0 deregistration", "deregistration", events.Marshal(events.Deregistration{PEID: "a", Time: now}), "/seq"},
		{"seq negative", "registration", mutate(t, reg, func(m map[string]any) { m["seq"] = -1 }), "/seq"},
		{"seq fraction", "registration", mutate(t, reg, func(m map[string]any) { m["seq"] = 1.5 }), "/seq"},
		{"seq as string", "registration", mutate(t, reg, func(m map[string]any) { m["seq"] = "42" }), "/seq"},
		{"proto ftp", "registration", mutate(t, reg, func(m map[string]any) { tr(m, 0)["proto"] = "ftp" }), "/transports/0/proto"},
		{"tcp without addr", "registration", mutate(t, reg, func(m map[string]any) { delete(tr(m, 0), "addr") }), "/transports/0"},
		{"tcp addr not HOST:PORT", "registration", mutate(t, reg, func(m map[string]any) { tr(m, 2)["addr"] = "pe.example" }), "/transports/2/addr"},
		{"http without addr", "registration", mutate(t, reg, func(m map[string]any) { delete(tr(m, 3), "addr") }), "/transports/3"},
		{"nats without subject", "registration", mutate(t, reg, func(m map[string]any) { delete(tr(m, 4), "subject") }), "/transports/4"},
		{"nats with addr only", "registration", mutate(t, reg, func(m map[string]any) { tr(m, 4)["addr"] = "h:1"; delete(tr(m, 4), "subject") }), "/transports/4"},
		{"no transports", "registration", mutate(t, reg, func(m map[string]any) { m["transports"] = []any{} }), "/transports"},
		{"17 transports", "registration", mutate(t, reg, func(m map[string]any) {
			m["transports"] = slices.Repeat([]any{map[string]any{"proto": "tcp", "addr": "h:1"}}, 17)
		}), "/transports"},
		{"load 1.5", "registration", mutate(t, reg, func(m map[string]any) { pol(m)["load"] = 1.5 }), "/policy/load"},
		{"load negative", "registration", mutate(t, reg, func(m map[string]any) { pol(m)["load"] = -0.1 }), "/policy/load"},
		{"degradation 2", "registration", mutate(t, reg, func(m map[string]any) { pol(m)["degradation"] = 2 }), "/policy/degradation"},
		{"load_increment 1.01", "registration", mutate(t, reg, func(m map[string]any) { pol(m)["load_increment"] = 1.01 }), "/policy/load_increment"},
		{"weight 0", "registration", mutate(t, reg, func(m map[string]any) { pol(m)["weight"] = 0 }), "/policy/weight"},
		{"priority negative", "registration", mutate(t, reg, func(m map[string]any) { pol(m)["priority"] = -1 }), "/policy/priority"},
		{"policy without name", "registration", mutate(t, reg, func(m map[string]any) { delete(pol(m), "name") }), "/policy"},
		{"negative lifetime", "registration", mutate(t, reg, func(m map[string]any) { m["lifetime_ms"] = -1 }), "/lifetime_ms"},
		{"lifetime over 24 h", "registration", mutate(t, reg, func(m map[string]any) { m["lifetime_ms"] = 86400001 }), "/lifetime_ms"},
		{"accepted with empty pe_id", "outcome", events.Marshal(events.Outcome{Seq: 1, Accepted: true}), "/pe_id"},
		{"rejected with pe_id a number", "outcome", []byte(`{"pe_id":7,"seq":0,"accepted":false,"error":{"code":"bad_request","message":"m"}}`), "/pe_id"},
		{"meta value not a string", "registration", mutate(t, reg, func(m map[string]any) { m["meta"] = map[string]any{"zone": 1} }), "/meta/zone"},
		{"time not RFC 3339", "registration", mutate(t, reg, func(m map[string]any) { m["time"] = "25 Nov 2026 10:00" }), "/time"},
		{"time placeholder", "deregistration", []byte(`{"pe_id": "echo-1", "seq": 43, "time": "..."}`), "/time"},
		{"missing time", "registration", mutate(t, reg, func(m map[string]any) { delete(m, "time") }), "time"},
		{"missing pe_id", "registration", mutate(t, reg, func(m map[string]any) { delete(m, "pe_id") }), "pe_id"},
		{"missing policy", "registration", mutate(t, reg, func(m map[string]any) { delete(m, "policy") }), "policy"},
		{"missing seq", "deregistration", []byte(`{"pe_id":"a","time":"2026-01-01T00:00:00Z"}`), "seq"},
		{"not an object", "registration", []byte(`[]`), ""},
		{"not JSON", "registration", []byte(`{"pe_id":`), ""},
		{"trailing data", "outcome", []byte(`{"pe_id":"a","seq":1,"accepted":true} {}`), ""},
		{"empty body", "registration", nil, ""},
		{"accepted with error", "outcome", []byte(`{"pe_id":"a","seq":1,"accepted":true,"error":{"code":"stale","message":"m"}}`), ""},
		{"accepted with seq 0", "outcome", []byte(`{"pe_id":"a","seq":0,"accepted":true}`), "/seq"},
		{"rejected without error", "outcome", events.Marshal(events.Outcome{PEID: "a", Seq: 1}), ""},
		{"unknown error code", "outcome", []byte(`{"pe_id":"a","seq":1,"accepted":false,"error":{"code":"oops","message":"m"}}`), "/error/code"},
		{"error without message", "outcome", []byte(`{"pe_id":"a","seq":1,"accepted":false,"error":{"code":"stale"}}`), "/error"},
		{"missing accepted", "outcome", []byte(`{"pe_id":"a","seq":1}`), "accepted"},
		{"record without home", "record", mutate(t, rec, func(m map[string]any) { delete(m, "home_nameserver") }), "home_nameserver"},
		{"record with bad signer", "record", mutate(t, rec, func(m map[string]any) { m["signer"] = "ABCDEF" }), "/signer"},
		{"record with bad pool", "record", mutate(t, rec, func(m map[string]any) { m["pool"] = "a.b" }), "/pool"},
		{"record last_seq 0", "record", mutate(t, rec, func(m map[string]any) { m["last_seq"] = 0 }), "/last_seq"},
		{"record last_seq 2^53", "record", mutate(t, rec, func(m map[string]any) { m["last_seq"] = uint64(1 << 53) }), "/last_seq"},
		{"record bad updated_at", "record", mutate(t, rec, func(m map[string]any) { m["updated_at"] = "yesterday" }), "/updated_at"},
		{"record conn without cid", "record", mutate(t, rec, func(m map[string]any) { m["conn"] = map[string]any{"server": "N1"} }), "/conn"},
		{"registration conn cid 0", "registration", mutate(t, reg, func(m map[string]any) { m["conn"] = map[string]any{"server": "N1", "cid": 0} }), "/conn/cid"},
		{"registration conn server empty", "registration", mutate(t, reg, func(m map[string]any) { m["conn"] = map[string]any{"server": "", "cid": 3} }), "/conn/server"},
		{"reports bad reporter", "reports", []byte(`{"not-a-key":"2026-01-01T00:00:00Z"}`), ""},
		{"reports bad time", "reports", []byte(`{"` + signer(t) + `":"soon"}`), ""},
		{"max 129", "resolve_request", []byte(`{"max":129}`), "/max"},
		{"max 0", "resolve_request", []byte(`{"max":0}`), "/max"},
		{"bad exclude", "resolve_request", []byte(`{"exclude":["ok","not ok"]}`), "/exclude/1"},
		{"bad affinity", "resolve_request", []byte(`{"affinity":"_x"}`), "/affinity"},
		{"answer with elements and error", "resolve_answer", events.Marshal(events.ResolveAnswer{Scope: "s", Pool: "p", Policy: "random", Elements: []events.Element{el}, Error: &events.Error{Code: "stale", Message: "m"}}), ""},
		{"answer without pool", "resolve_answer", events.Marshal(events.ResolveAnswer{Scope: "s", Policy: "random", Elements: []events.Element{el}}), ""},
		{"answer with bad scope", "resolve_answer", events.Marshal(events.ResolveAnswer{Scope: "Default", Pool: "p", Policy: "random"}), "/scope"},
		{"answer with bad element", "resolve_answer", events.Marshal(events.ResolveAnswer{Scope: "s", Pool: "p", Policy: "random", Elements: []events.Element{{PEID: "e"}}}), "/elements/0"},
		{"change op", "change", mutate(t, change, func(m map[string]any) { m["op"] = "delete" }), "/op"},
		{"change reason", "change", mutate(t, change, func(m map[string]any) { m["reason"] = "crashed" }), "/reason"},
		{"change add without element", "change", mutate(t, change, func(m map[string]any) { delete(m, "element") }), ""},
		{"change without revision", "change", mutate(t, change, func(m map[string]any) { delete(m, "revision") }), "revision"},
		{"change scope too long", "change", mutate(t, change, func(m map[string]any) { m["scope"] = strings.Repeat("s", 65) }), "/scope"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Validate(c.schema, c.body)
			if err == nil {
				t.Fatalf("%s accepts %s", c.schema, c.body)
			}
			if !strings.Contains(err.Error(), c.schema) {
				t.Errorf("error does not name the schema %s: %v", c.schema, err)
			}
			if c.where != "" && !strings.Contains(err.Error(), c.where) {
				t.Errorf("error does not mention %q:\n%v", c.where, err)
			}
		})
	}
}

// TestAgreesWithEvents checks that the registration schema and
// events.Registration.Validate agree on a set of borderline bodies.
func TestAgreesWithEvents(t *testing.T) {
	cases := []struct {
		name string
		f    func(r *events.Registration)
		ok   bool
	}{
		{"as built", func(*events.Registration) {}, true},
		{"pe_id 64 chars", func(r *events.Registration) { r.PEID = strings.Repeat("x", 64) }, true},
		{"pe_id 65 chars", func(r *events.Registration) { r.PEID = strings.Repeat("x", 65) }, false},
		{"pe_id _x", func(r *events.Registration) { r.PEID = "_x" }, false},
		{"seq 0", func(r *events.Registration) { r.Seq = 0 }, false},
		{"lifetime 0 (default)", func(r *events.Registration) { r.LifetimeMS = 0 }, true},
		{"lifetime -5", func(r *events.Registration) { r.LifetimeMS = -5 }, false},
		{"lifetime 24 h", func(r *events.Registration) { r.LifetimeMS = 86400000 }, true},
		{"lifetime 24 h + 1 ms", func(r *events.Registration) { r.LifetimeMS = 86400001 }, false},
		{"lifetime 1 ms (rounded up)", func(r *events.Registration) { r.LifetimeMS = 1 }, true},
		{"tcp :80", func(r *events.Registration) { r.Transports = []events.Transport{{Proto: "tcp", Addr: ":80"}} }, true},
		{"tcp [::1]:80", func(r *events.Registration) { r.Transports = []events.Transport{{Proto: "tcp", Addr: "[::1]:80"}} }, true},
		{"tcp ::1:80", func(r *events.Registration) { r.Transports = []events.Transport{{Proto: "tcp", Addr: "::1:80"}} }, false},
		{"udp no port", func(r *events.Registration) { r.Transports = []events.Transport{{Proto: "udp", Addr: "host"}} }, false},
		{"http any addr", func(r *events.Registration) { r.Transports = []events.Transport{{Proto: "http", Addr: "https://x/y"}} }, true},
		{"nats subject", func(r *events.Registration) { r.Transports = []events.Transport{{Proto: "nats", Subject: "a.b"}} }, true},
		{"nats without subject", func(r *events.Registration) { r.Transports = []events.Transport{{Proto: "nats", Addr: "h:1"}} }, false},
		{"proto TCP", func(r *events.Registration) { r.Transports = []events.Transport{{Proto: "TCP", Addr: "h:1"}} }, false},
		{"16 transports", func(r *events.Registration) {
			r.Transports = slices.Repeat([]events.Transport{{Proto: "tcp", Addr: "h:1"}}, 16)
		}, true},
		{"17 transports", func(r *events.Registration) {
			r.Transports = slices.Repeat([]events.Transport{{Proto: "tcp", Addr: "h:1"}}, 17)
		}, false},
		{"weight -1", func(r *events.Registration) { r.Policy.Weight = -1 }, false},
		{"weight 0 (omitted)", func(r *events.Registration) { r.Policy.Weight = 0 }, true},
		{"priority 0", func(r *events.Registration) { r.Policy.Priority = 0 }, true},
		{"priority -1", func(r *events.Registration) { r.Policy.Priority = -1 }, false},
		{"load 1", func(r *events.Registration) { r.Policy.Load = 1 }, true},
		{"load 1.5", func(r *events.Registration) { r.Policy.Load = 1.5 }, false},
		{"degradation -0.5", func(r *events.Registration) { r.Policy.Degradation = -0.5 }, false},
		{"load_increment 2", func(r *events.Registration) { r.Policy.LoadIncrement = 2 }, false},
		{"no policy name", func(r *events.Registration) { r.Policy.Name = "" }, false},
		{"conn", func(r *events.Registration) { r.Conn = &events.Conn{Server: "N1", CID: 1} }, true},
		{"conn cid 0", func(r *events.Registration) { r.Conn = &events.Conn{Server: "N1"} }, false},
		{"conn no server", func(r *events.Registration) { r.Conn = &events.Conn{CID: 4} }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := registration()
			c.f(&r)
			body := events.Marshal(r)
			schemaErr := Validate("registration", body)
			var back events.Registration
			if err := events.Decode(body, &back); err != nil {
				t.Fatal(err)
			}
			eventsErr := back.Validate(now, time.Minute)
			if (schemaErr == nil) != c.ok || (eventsErr == nil) != c.ok {
				t.Fatalf("want ok=%v; schema: %v; events: %v", c.ok, schemaErr, eventsErr)
			}
		})
	}
}

func TestConcurrentValidate(t *testing.T) {
	body := events.Marshal(registration())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				if err := Validate("registration", body); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
