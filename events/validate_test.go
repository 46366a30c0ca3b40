package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func goodRegistration() Registration {
	return Registration{
		PEID:       "echo-1",
		Seq:        42,
		Time:       now,
		LifetimeMS: 5000,
		Transports: []Transport{
			{Proto: "tcp", Addr: "127.0.0.1:7001"},
			{Proto: "nats", Subject: "svc.echo"},
			{Proto: "http", Addr: "http://127.0.0.1:8080"},
			{Proto: "udp", Addr: "[::1]:7001"},
			{Proto: "sctp", Addr: "host:9"},
		},
		Policy: PolicyParams{Name: "round_robin", Weight: 1, Load: 0.5},
		Meta:   map[string]string{"zone": "a"},
	}
}

// fieldOf returns the field a *FieldError names, or fails.
func fieldOf(t *testing.T, err error) string {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *FieldError", err, err)
	}
	return fe.Field
}

func TestRegistrationValidate(t *testing.T) {
	const skew = DefaultClockSkew
	cases := []struct {
		name  string
		f     func(r *Registration)
		field string // "" = valid
	}{
		{"good", func(*Registration) {}, ""},
		{"defaults", func(r *Registration) { r.LifetimeMS = 0; r.Meta = nil; r.Policy = PolicyParams{Name: "random"} }, ""},
		{"time at +skew", func(r *Registration) { r.Time = now.Add(skew) }, ""},
		{"time at -skew", func(r *Registration) { r.Time = now.Add(-skew) }, ""},
		{"load and friends at 1", func(r *Registration) { r.Policy.Load, r.Policy.Degradation, r.Policy.LoadIncrement = 1, 1, 1 }, ""},
		{"16 transports", func(r *Registration) { r.Transports = slices.Repeat(r.Transports[:1], MaxTransports) }, ""},
		{"bad pe_id", func(r *Registration) { r.PEID = "-x" }, "pe_id"},
		{"empty pe_id", func(r *Registration) { r.PEID = "" }, "pe_id"},
		{"seq 0", func(r *Registration) { r.Seq = 0 }, "seq"},
		{"seq at the bound", func(r *Registration) { r.Seq = MaxSeq }, ""},
		{"seq beyond the bound", func(r *Registration) { r.Seq = MaxSeq + 1 }, "seq"},
		{"seq 2^64-1", func(r *Registration) { r.Seq = 1<<64 - 1 }, "seq"},
		{"conn.cid beyond the bound", func(r *Registration) { r.Conn = &Conn{Server: "N", CID: MaxSeq + 1} }, "conn.cid"},
		{"weight and priority at the bound", func(r *Registration) { r.Policy.Weight, r.Policy.Priority = MaxWeight, MaxPriority }, ""},
		{"weight beyond the bound", func(r *Registration) { r.Policy.Weight = MaxWeight + 1 }, "policy.weight"},
		{"weight 2^63-1", func(r *Registration) { r.Policy.Weight = 1<<63 - 1 }, "policy.weight"},
		{"priority beyond the bound", func(r *Registration) { r.Policy.Priority = MaxPriority + 1 }, "policy.priority"},
		{"zero time", func(r *Registration) { r.Time = time.Time{} }, "time"},
		{"time beyond +skew", func(r *Registration) { r.Time = now.Add(skew + time.Nanosecond) }, "time"},
		{"time beyond -skew", func(r *Registration) { r.Time = now.Add(-skew - time.Nanosecond) }, "time"},
		{"negative lifetime", func(r *Registration) { r.LifetimeMS = -1 }, "lifetime_ms"},
		{"no transports", func(r *Registration) { r.Transports = nil }, "transports"},
		{"17 transports", func(r *Registration) { r.Transports = slices.Repeat(r.Transports[:1], MaxTransports+1) }, "transports"},
		{"proto ftp", func(r *Registration) { r.Transports[0].Proto = "ftp" }, "transports[0].proto"},
		{"proto empty", func(r *Registration) { r.Transports[3].Proto = "" }, "transports[3].proto"},
		{"tcp addr without port", func(r *Registration) { r.Transports[0].Addr = "127.0.0.1" }, "transports[0].addr"},
		{"tcp addr empty", func(r *Registration) { r.Transports[0].Addr = "" }, "transports[0].addr"},
		{"nats without subject", func(r *Registration) { r.Transports[1] = Transport{Proto: "nats", Addr: "h:1"} }, "transports[1].subject"},
		{"http without addr", func(r *Registration) { r.Transports[2].Addr = "" }, "transports[2].addr"},
		{"udp ipv6 without brackets", func(r *Registration) { r.Transports[3].Addr = "::1:7001" }, "transports[3].addr"},
		{"sctp addr", func(r *Registration) { r.Transports[4].Addr = "host" }, "transports[4].addr"},
		{"policy name", func(r *Registration) { r.Policy.Name = "" }, "policy.name"},
		{"policy weight", func(r *Registration) { r.Policy.Weight = -1 }, "policy.weight"},
		{"policy priority", func(r *Registration) { r.Policy.Priority = -1 }, "policy.priority"},
		{"policy load", func(r *Registration) { r.Policy.Load = 1.5 }, "policy.load"},
		{"policy load negative", func(r *Registration) { r.Policy.Load = -0.01 }, "policy.load"},
		{"policy degradation", func(r *Registration) { r.Policy.Degradation = 2 }, "policy.degradation"},
		{"policy load_increment", func(r *Registration) { r.Policy.LoadIncrement = -1 }, "policy.load_increment"},
		{"conn", func(r *Registration) { r.Conn = &Conn{Server: "NSERVER", CID: 7} }, ""},
		{"conn without server", func(r *Registration) { r.Conn = &Conn{CID: 7} }, "conn.server"},
		{"conn cid 0", func(r *Registration) { r.Conn = &Conn{Server: "NSERVER"} }, "conn.cid"},
		{"16 meta keys", func(r *Registration) { r.Meta = metaOf(MaxMetaKeys, 2, 1) }, ""},
		{"17 meta keys", func(r *Registration) { r.Meta = metaOf(MaxMetaKeys+1, 2, 1) }, "meta"},
		{"meta key at the bound", func(r *Registration) { r.Meta = metaOf(1, MaxMetaKey, MaxMetaValue) }, ""},
		{"meta key too long", func(r *Registration) { r.Meta = metaOf(1, MaxMetaKey+1, 1) }, "meta"},
		{"meta key empty", func(r *Registration) { r.Meta = map[string]string{"": "x"} }, "meta"},
		{"meta value too long", func(r *Registration) { r.Meta = map[string]string{"k": strings.Repeat("v", MaxMetaValue+1)} }, "meta.k"},
		{"addr too long", func(r *Registration) { r.Transports[2].Addr = "http://h/" + strings.Repeat("p", MaxAddr) }, "transports[2].addr"},
		{"subject too long", func(r *Registration) { r.Transports[1].Subject = strings.Repeat("s", MaxAddr+1) }, "transports[1].subject"},
		{"element too big", func(r *Registration) {
			r.Transports = slices.Repeat([]Transport{{Proto: "http", Addr: "http://h/" + strings.Repeat("p", MaxAddr-9)}}, MaxTransports)
			r.Meta = metaOf(MaxMetaKeys, MaxMetaKey, MaxMetaValue)
		}, "registration"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := goodRegistration()
			c.f(&r)
			err := r.Validate(now, skew)
			if c.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted a registration with a bad %s", c.field)
			}
			if got := fieldOf(t, err); got != c.field {
				t.Fatalf("error names %q, want %q (%v)", got, c.field, err)
			}
			if !strings.HasPrefix(err.Error(), c.field+": ") {
				t.Fatalf("error %q does not start with the field", err)
			}
		})
	}
}

// NaN fails every comparison, so "v < 0 || v > 1" lets it through. It cannot
// arrive over JSON, only from Go callers (the client library).
func TestPolicyLoadNaN(t *testing.T) {
	r := goodRegistration()
	r.Policy.Load = math.NaN()
	if r.Validate(now, DefaultClockSkew) == nil {
		t.Fatal("NaN load accepted")
	}
}

func TestLifetime(t *testing.T) {
	cases := []struct {
		ms   int64
		want time.Duration
	}{
		{0, 5 * time.Second},
		{1, time.Second},
		{999, time.Second},
		{1000, time.Second},
		{1001, 2 * time.Second},
		{1500, 2 * time.Second},
		{2000, 2 * time.Second},
		{5000, 5 * time.Second},
		{59_999, 60 * time.Second},
		{-1, time.Second},
	}
	for _, c := range cases {
		r := Registration{LifetimeMS: c.ms}
		if got := r.Lifetime(); got != c.want {
			t.Errorf("Lifetime(%d ms) = %v, want %v", c.ms, got, c.want)
		}
	}
	if DefaultLifetime != 5*time.Second {
		t.Errorf("DefaultLifetime = %v, protocol says 5 s", DefaultLifetime)
	}
}

func TestLifetimeHuge(t *testing.T) {
	r := goodRegistration()
	r.LifetimeMS = 1e13
	if r.Validate(now, DefaultClockSkew) == nil && r.Lifetime() <= 0 {
		t.Fatalf("lifetime_ms %d accepted with Lifetime() = %v", r.LifetimeMS, r.Lifetime())
	}
}

func TestDeregistrationValidate(t *testing.T) {
	cases := []struct {
		d     Deregistration
		field string
	}{
		{Deregistration{PEID: "echo-1", Seq: 43, Time: now}, ""},
		{Deregistration{PEID: "echo.1", Seq: 43, Time: now}, "pe_id"},
		{Deregistration{PEID: "echo-1", Time: now}, "seq"},
		{Deregistration{PEID: "echo-1", Seq: 43}, "time"},
		{Deregistration{PEID: "echo-1", Seq: 43, Time: now.Add(-time.Hour)}, "time"},
	}
	for i, c := range cases {
		err := c.d.Validate(now, DefaultClockSkew)
		if c.field == "" {
			if err != nil {
				t.Errorf("case %d: %v", i, err)
			}
			continue
		}
		if err == nil || fieldOf(t, err) != c.field {
			t.Errorf("case %d: %v, want a %s error", i, err, c.field)
		}
	}
}

func TestFailureReportValidate(t *testing.T) {
	cases := []struct {
		f     FailureReport
		field string
	}{
		{FailureReport{PEID: "echo-1", Time: now, Reason: "connect refused"}, ""},
		{FailureReport{PEID: "echo-1", Time: now.Add(DefaultClockSkew)}, ""},
		{FailureReport{PEID: "", Time: now}, "pe_id"},
		{FailureReport{PEID: "echo-1"}, "time"},
		{FailureReport{PEID: "echo-1", Time: now.Add(DefaultClockSkew + time.Second)}, "time"},
	}
	for i, c := range cases {
		err := c.f.Validate(now, DefaultClockSkew)
		if c.field == "" {
			if err != nil {
				t.Errorf("case %d: %v", i, err)
			}
			continue
		}
		if err == nil || fieldOf(t, err) != c.field {
			t.Errorf("case %d: %v, want a %s error", i, err, c.field)
		}
	}
}

func TestResolveRequestValidate(t *testing.T) {
	q := ResolveRequest{}
	if err := q.Validate(); err != nil || q.Max != DefaultMax || DefaultMax != 3 {
		t.Fatalf("empty request: %v, max %d", err, q.Max)
	}
	q = ResolveRequest{Max: MaxMax, Exclude: []string{"a", "b"}, Affinity: "c"}
	if err := q.Validate(); err != nil || q.Max != 128 {
		t.Fatalf("max 128: %v, max %d", err, q.Max)
	}
	for _, c := range []struct {
		q     ResolveRequest
		field string
	}{
		{ResolveRequest{Max: MaxMax + 1}, "max"},
		{ResolveRequest{Max: -1}, "max"},
		{ResolveRequest{Exclude: []string{"ok", "not.ok"}}, "exclude[1]"},
		{ResolveRequest{Affinity: "-x"}, "affinity"},
	} {
		err := c.q.Validate()
		if err == nil || fieldOf(t, err) != c.field {
			t.Errorf("%+v: %v, want a %s error", c.q, err, c.field)
		}
	}
}

func TestDecode(t *testing.T) {
	var r Registration
	body := Marshal(goodRegistration())
	if err := Decode(body, &r); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r, goodRegistration()) {
		t.Fatalf("round trip: %+v", r)
	}
	cases := []struct {
		body, field, says string
	}{
		{`{"seq":"42"}`, "seq", "string"},
		{`{"seq":-1}`, "seq", "-1"},
		{`{"seq":1.5}`, "seq", "1.5"},
		{`{"pe_id":7}`, "pe_id", "number"},
		{`{"lifetime_ms":"5s"}`, "lifetime_ms", "string"},
		{`{"transports":{}}`, "transports", "object"},
		{`{"transports":[{"proto":1}]}`, "transports.proto", "number"},
		{`{"transports":[{"proto":"tcp","addr":["h:1"]}]}`, "transports.addr", "array"},
		{`{"policy":{"load":"0.5"}}`, "policy.load", "string"},
		{`{"policy":{"weight":1.5}}`, "policy.weight", "1.5"},
		{`{"policy":"round_robin"}`, "policy", "string"},
		{`{"meta":{"zone":1}}`, "meta", "number"},
		{`{"time":"yesterday"}`, "time", "RFC 3339"},
		{`{"pe_id":`, "body", "not valid JSON"},
		{`{"pe_id":"a"} x`, "body", "not valid JSON"},
		{`[]`, "body", "array"},
	}
	for _, c := range cases {
		var r Registration
		err := Decode([]byte(c.body), &r)
		if err == nil {
			t.Errorf("Decode(%s) accepted", c.body)
			continue
		}
		if got := fieldOf(t, err); got != c.field || !strings.Contains(err.Error(), c.says) {
			t.Errorf("Decode(%s) = %q, want field %q saying %q", c.body, err, c.field, c.says)
		}
	}
	// Unknown fields are ignored.
	var d Deregistration
	if err := Decode([]byte(`{"pe_id":"a","seq":1,"time":"2026-11-25T10:00:00Z","future":[1]}`), &d); err != nil || d.PEID != "a" || d.Seq != 1 || !d.Time.Equal(now) {
		t.Fatalf("unknown field: %v %+v", err, d)
	}
}

func TestDecodeTimeFieldNames(t *testing.T) {
	var rec Record
	if err := Decode([]byte(`{"updated_at":"x"}`), &rec); err == nil || fieldOf(t, err) != "updated_at" {
		t.Errorf("record updated_at: %v", err)
	}
	var r Registration
	if err := Decode([]byte(`{"time":5}`), &r); err == nil || fieldOf(t, err) != "time" {
		t.Errorf("numeric time: %v", err)
	}
}

func TestMarshal(t *testing.T) {
	// omitempty: zero policy parameters and empty optional fields are absent.
	body := string(Marshal(Registration{PEID: "a", Seq: 1, Time: now, Transports: []Transport{{Proto: "tcp", Addr: "h:1"}}, Policy: PolicyParams{Name: "random"}}))
	want := `{"pe_id":"a","seq":1,"time":"2026-11-25T10:00:00Z","transports":[{"proto":"tcp","addr":"h:1"}],"policy":{"name":"random"}}`
	if body != want {
		t.Errorf("Marshal = %s\nwant      %s", body, want)
	}
	if got := string(Marshal(ResolveRequest{})); got != `{}` {
		t.Errorf("empty request = %s", got)
	}
	if got := string(Marshal(Outcome{PEID: "a", Seq: 1, Accepted: true})); got != `{"pe_id":"a","seq":1,"accepted":true}` {
		t.Errorf("outcome = %s", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("Marshal of an unencodable value did not panic")
		}
	}()
	Marshal(math.Inf(1))
}

func TestErrorAndElement(t *testing.T) {
	var err error = &Error{Code: CodeNotFound, Message: "no pool echo"}
	if err.Error() != "not_found: no pool echo" {
		t.Errorf("Error() = %q", err)
	}
	var back Error
	if json.Unmarshal(Marshal(err), &back) != nil || back != (Error{Code: "not_found", Message: "no pool echo"}) {
		t.Errorf("round trip = %+v", back)
	}
	r := goodRegistration()
	rec := Record{PEID: r.PEID, Pool: "echo", Transports: r.Transports, Policy: r.Policy, Meta: r.Meta, Signer: "U", Home: "ns-1"}
	if el := rec.Element(); !reflect.DeepEqual(el, Element{PEID: r.PEID, Transports: r.Transports, Policy: r.Policy, Meta: r.Meta}) {
		t.Errorf("Element() = %+v", el)
	}
	if !strings.Contains(string(Marshal(rec)), `"home_nameserver":"ns-1"`) {
		t.Errorf("record JSON lacks home_nameserver: %s", Marshal(rec))
	}
}

// metaOf makes n meta entries with keys of klen and values of vlen bytes.
func metaOf(n, klen, vlen int) map[string]string {
	m := map[string]string{}
	for i := range n {
		k := fmt.Sprintf("%02d", i) + strings.Repeat("k", max(klen-2, 0))
		m[k[:klen]] = strings.Repeat("v", vlen)
	}
	return m
}
