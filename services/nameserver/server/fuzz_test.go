package server

// Fuzz targets of the name server's own readers of wire input: the
// resolver's hand-written fast paths (request bodies, pool names) and the
// answer it writes by hand, what an outcome echoes of a body, the subject
// tokens it publishes under, the nats transports it checks, and the
// disconnect advisories. The bodies themselves (events.Decode) are fuzzed
// in package events.

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/policy"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func FuzzDecodeMaxOnly(f *testing.F) {
	for _, s := range []string{`{}`, `{"max":1}`, `{"max":128}`, `{"max":999}`, `{"max":0}`, `{"max":01}`,
		`{"max":1 }`, `{ "max":1}`, `{"max":-1}`, `{"max":1e2}`, `{"MAX":5}`, `{"max":5,"max":6}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fast events.ResolveRequest
		if !decodeMaxOnly(body, &fast) {
			if fast.Max != 0 {
				t.Fatalf("%q: refused, but set max %d", body, fast.Max)
			}
			return
		}
		// Taken: encoding/json reads the very same request.
		var slow events.ResolveRequest
		if err := events.Decode(body, &slow); err != nil {
			t.Fatalf("%q: the fast path read max %d, encoding/json refuses it: %v", body, fast.Max, err)
		}
		if fast.Max != slow.Max || slow.Exclude != nil || slow.Affinity != "" || slow.Hint != nil {
			t.Fatalf("%q: the fast path read %+v, encoding/json %+v", body, fast, slow)
		}
	})
}

func FuzzValidPool(f *testing.F) {
	for _, s := range []string{"echo", "Echo_1-x", "_echo", "-", "", "é", "echo.x", strings.Repeat("a", 128), strings.Repeat("a", 129), "a\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if fast, slow := validPool(p), events.CheckPool(p) == nil; fast != slow {
			t.Fatalf("validPool(%q) = %v, CheckPool says %v", p, fast, slow)
		}
	})
}

// exactlyOnce returns the value of field in obj when obj names it once, in
// its exact spelling: encoding/json also fills a field from a key that
// differs in case, and keeps the last.
func exactlyOnce(obj map[string]json.RawMessage, field string) (json.RawMessage, bool) {
	n := 0
	for k := range obj {
		if strings.EqualFold(k, field) {
			n++
		}
	}
	raw, ok := obj[field]
	return raw, ok && n == 1
}

func FuzzPeIDAndSeq(f *testing.F) {
	for _, s := range []string{`{"pe_id":"echo-1","seq":1764410400000000,"time":"2026-11-29T10:00:00Z"}`,
		`{"pe_id":"bad id","seq":-1}`, `{"pe_id":7,"seq":2}`, `{"seq":18446744073709551615}`, `{"pe_id":"a","time":"yesterday"}`, `[1]`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		id, seq := peIDAndSeq(body)
		// Even from a body that fails validation, each field that is
		// there, of the right type, is echoed.
		var obj map[string]json.RawMessage
		if json.Unmarshal(body, &obj) != nil {
			return
		}
		if raw, ok := exactlyOnce(obj, "pe_id"); ok {
			var want string
			if json.Unmarshal(raw, &want) == nil && id != want {
				t.Fatalf("%q: pe_id %q, want %q", body, id, want)
			}
		}
		if raw, ok := exactlyOnce(obj, "seq"); ok {
			var want uint64
			if json.Unmarshal(raw, &want) == nil && seq != want {
				t.Fatalf("%q: seq %d, want %d", body, seq, want)
			}
		}
	})
}

// nameRule is a name every rule of the protocol accepts as a subject token.
var nameRule = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// publishable tells whether subject is a literal subject the NATS client
// sends (no wildcard token, no empty token, no white space that breaks
// the protocol line).
func publishable(subject string) bool {
	return natsserver.IsValidLiteralSubject(subject) && !strings.ContainsFunc(subject, unicode.IsSpace)
}

func FuzzSubjectToken(f *testing.F) {
	for _, s := range []string{"echo-1", "", "a.b", "*", ">", "a b", "a\tb", "é", "a*b", "\f"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := subjectToken(s)
		if subject := events.OutcomeSubject("default", "echo", tok); !publishable(subject) || strings.Count(subject, ".") != 4 {
			t.Fatalf("subjectToken(%q) = %q: %q is not a subject of 5 tokens", s, tok, subject)
		}
		if nameRule.MatchString(s) && tok != s {
			t.Fatalf("subjectToken(%q) = %q: a name must stay as it is", s, tok)
		}
	})
}

func FuzzCheckable(f *testing.F) {
	for _, tr := range []events.Transport{{Proto: "nats", Subject: "rsp.default.svc.echo.echo-1"}, {Proto: "nats", Subject: "$JS.API.STREAM.DELETE.RSP_EVENTS"},
		{Proto: "nats", Subject: "rsp.default.svc.echo.>"}, {Proto: "nats", Subject: "rsp.default.svc.echo."}, {Proto: "nats", Subject: "rsp.default.svc.echo..x"},
		{Proto: "nats", Subject: "rsp.default.svc.echoes.x"}, {Proto: "tcp", Addr: "10.0.0.1:7001"}, {Proto: "http", Addr: "http://x/"}} {
		f.Add(tr.Proto, tr.Subject, tr.Addr)
	}
	service := events.ServiceSubjects("default", "echo")
	f.Fuzz(func(t *testing.T, proto, subject, addr string) {
		tr := events.Transport{Proto: proto, Subject: subject, Addr: addr}
		ok := checkable("default", "echo", tr)
		switch {
		case proto == "tcp":
			if !ok {
				t.Fatalf("tcp transport %+v not checked", tr)
			}
		case proto != "nats":
			if ok {
				t.Fatalf("%s transport %+v checked", proto, tr)
			}
		case ok && !(publishable(subject) && natsserver.SubjectMatchesFilter(subject, service)):
			// The replica may publish anywhere in its account: it must
			// never send a check elsewhere than to a PE service subject.
			t.Fatalf("checks nats transport %q, not a literal subject under %s", subject, service)
		case !ok && publishable(subject) && natsserver.SubjectMatchesFilter(subject, service) &&
			nameRule.MatchString(strings.ReplaceAll(subject, ".", "_")):
			t.Fatalf("does not check nats transport %q", subject)
		}
	})
}

func FuzzDisconnectAdvisory(f *testing.F) {
	for _, s := range []string{
		`{"type":"io.nats.server.advisory.v1.client_disconnect","id":"x","timestamp":"2026-11-29T10:00:00Z","server":{"name":"n1","host":"0.0.0.0","id":"NCXYZEXAMPLESERVERID","ver":"2.12.0","seq":7,"jetstream":true,"time":"2026-11-29T10:00:00Z"},"client":{"start":"2026-11-29T09:00:00Z","host":"127.0.0.1","id":17,"acc":"A","kind":"Client","type":"nats"},"sent":{"msgs":1,"bytes":2},"received":{"msgs":3,"bytes":4},"reason":"Client Closed"}`,
		`{"server":{"id":"S"},"client":{"id":1},"reason":"Server Shutdown"}`,
		`{"server":{"id":""},"client":{"id":1}}`, `{"server":{"id":"S"},"client":{"id":-1}}`, `{"server":{"id":"S"},"client":{"id":0}}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		d := &disconnects{log: discard, pending: make(chan pendingDisconnect, 1)}
		d.advisory(&nats.Msg{Subject: events.DisconnectSubject("A"), Data: body})
		var want disconnectAdvisory
		named := json.Unmarshal(body, &want) == nil && want.Server.ID != "" && want.Client.ID != 0 && want.Reason != reasonServerShutdown
		select {
		case p := <-d.pending:
			if !named || p.conn != (events.Conn{Server: want.Server.ID, CID: want.Client.ID}) {
				t.Fatalf("%q: takes out the PEs of connection %+v", body, p.conn)
			}
		default:
			if named {
				t.Fatalf("%q: connection %s/%d not taken out", body, want.Server.ID, want.Client.ID)
			}
		}
	})
}

// FuzzAnswer resolves a pool of one PE, its record as the bucket holds it,
// with a request body and pool: the answer the resolver writes by hand is
// JSON that encoding/json reads as what was asked.
func FuzzAnswer(f *testing.F) {
	record := `{"pe_id":"echo-1","pool":"echo","lifetime_ms":5000,"transports":[{"proto":"tcp","addr":"10.0.0.1:7001"}],"policy":{"name":"round_robin"},"meta":{"zone":"a"},"signer":"UAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RLKK","registered_at":"2026-11-29T10:00:00.0123Z","updated_at":"2026-11-29T10:00:03.345Z","last_seq":1764410403000000,"home_nameserver":"ns1-x7Gh2k"}`
	for _, s := range []struct{ record, request, pool string }{
		{record, ``, "echo"}, {record, `{"max":1}`, "echo"}, {record, `{"exclude":["echo-1"]}`, "echo"}, {record, `{"affinity":"echo-1","max":128}`, "echo"},
		{record, `{"max":0,"hint":{"zone":"a"}}`, "echo"}, {record, `{}`, "other"}, {record, `{}`, `ech"o`}, {`{"pe_id":"x\"y","policy":{"name":"weighted_random"}}`, ``, "echo"}, {`{"pe_id":"e","policy":{"name":"a\"b"}}`, ``, "echo"}, {`[]`, ``, "echo"},
	} {
		f.Add([]byte(s.record), []byte(s.request), s.pool)
	}
	f.Fuzz(func(t *testing.T, record, request []byte, pool string) {
		v := newView("default", discard)
		var rec events.Record
		if json.Unmarshal(record, &rec) != nil {
			rec.PEID = "echo-1" // undecodable: the view leaves it out
		}
		// A record naming a policy the replica lacks (written past the
		// registrar) makes a pool of the default policy.
		wantPolicy := rec.Policy.Name
		if _, known := policy.Get(wantPolicy); !known {
			wantPolicy = policy.Default
		}
		v.apply(kvEntry{key: events.Key("echo", rec.PEID), value: record, rev: 7, op: jetstream.KeyValuePut})
		r := &resolver{view: v}
		st := &answerState{}
		if e := r.answer(&nats.Msg{Subject: events.Subject("default", events.KindResolve, pool), Data: request}, st); e != nil {
			return
		}
		var ans events.ResolveAnswer
		if err := json.Unmarshal(st.body.Bytes(), &ans); err != nil {
			t.Fatalf("answer %q is not JSON: %v", st.body.Bytes(), err)
		}
		q := st.q // as the resolver read and validated it
		// The pool is the subject's last token.
		if asked := pool[strings.LastIndexByte(pool, '.')+1:]; ans.Scope != "default" || ans.Pool != asked || ans.Policy != wantPolicy || ans.Revision != 7 || ans.Error != nil || len(ans.Elements) > q.Max {
			t.Fatalf("request %q on pool %q: answer %s", request, pool, st.body.Bytes())
		}
		for _, el := range ans.Elements {
			if slices.Contains(q.Exclude, el.PEID) {
				t.Fatalf("excluded %q answered: %s", el.PEID, st.body.Bytes())
			}
			if got, want := events.Marshal(el), events.Marshal(rec.Element()); !bytes.Equal(got, want) {
				t.Fatalf("element %s, the record's is %s", got, want)
			}
		}
	})
}

// FuzzReadPage pages through a pool of fuzzed PE ids with a fuzzed first
// request: every page is sorted, after the page before, within its
// limit, and the pages together hold every member once; removals come on
// the first page only, those after removed_after.
func FuzzReadPage(f *testing.F) {
	f.Add("a,b,c,d,e", []byte(`{"limit":2,"removed_after":3}`))
	f.Add("x", []byte(`{}`))
	f.Add("a,b", []byte(`{"after":"a"}`))
	f.Add("", []byte(`{"limit":501}`))
	f.Fuzz(func(t *testing.T, ids string, request []byte) {
		v := newView("default", discard)
		members := map[string]bool{}
		rev := uint64(0)
		for _, id := range strings.Split(ids, ",") {
			if events.CheckPEID(id) != nil || members[id] {
				continue
			}
			rev++
			members[id] = true
			v.apply(kvEntry{key: events.Key("p", id), value: events.Marshal(events.Record{PEID: id, Pool: "p", Policy: events.PolicyParams{Name: "round_robin"}}), rev: rev, op: jetstream.KeyValuePut})
		}
		rev++
		v.apply(kvEntry{key: events.Key("p", "gone"), rev: rev, op: jetstream.KeyValuePurge})
		delete(members, "gone")
		var q events.ReadRequest
		if events.Decode(request, &q) != nil || q.Validate() != nil {
			return
		}
		seen := map[string]bool{}
		for page := 0; ; page++ {
			a, _ := v.readPage("p", &q)
			if len(a.Records) > q.Limit {
				t.Fatalf("%d records, limit %d", len(a.Records), q.Limit)
			}
			if page > 0 && len(a.Removed) > 0 {
				t.Fatalf("removals on page %d", page)
			}
			for _, x := range a.Removed {
				if x.Revision <= q.RemovedAfter || x.PEID != "gone" {
					t.Fatalf("removal %+v, removed_after %d", x, q.RemovedAfter)
				}
			}
			last := q.After
			for _, r := range a.Records {
				if r.Record.PEID <= last || seen[r.Record.PEID] {
					t.Fatalf("page %d: %q after %q", page, r.Record.PEID, last)
				}
				last = r.Record.PEID
				seen[r.Record.PEID] = true
			}
			if a.Next == "" {
				break
			}
			if a.Next != last {
				t.Fatalf("next %q, last record %q", a.Next, last)
			}
			q = events.ReadRequest{After: a.Next, Limit: q.Limit}
		}
		want := 0 // the members after the first request's after
		for id := range members {
			if id > firstAfter(request) {
				want++
			}
		}
		if len(seen) != want {
			t.Fatalf("pages hold %d members, want %d", len(seen), want)
		}
	})
}

// firstAfter is the after of a request body ("" when none).
func firstAfter(body []byte) string {
	var q events.ReadRequest
	_ = events.Decode(body, &q)
	return q.After
}
