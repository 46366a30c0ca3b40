package events_test

// Fuzz targets of every decoder of wire input in this package: the bodies
// of events, answers, records and beats, subjects and bucket keys, and the
// signature and JWT checks. `go test` runs their seeds (f.Add below and
// testdata/fuzz/<target>/) as unit tests; `go test -run '^$' -fuzz
// '^FuzzX$' ./events` fuzzes one (.ci/fuzz runs each briefly).

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
)

// Bodies of docs/protocol.md's examples.
const (
	exRegistration   = `{"pe_id": "echo-1", "seq": 1764410400000000, "time": "2026-11-29T10:00:00Z", "lifetime_ms": 5000, "transports": [{"proto": "tcp", "addr": "10.0.0.1:7001"}, {"proto": "nats", "subject": "rsp.default.svc.echo.echo-1"}], "policy": {"name": "least_used", "load": 0.25}, "meta": {"zone": "a"}, "conn": {"server": "NCXYZEXAMPLESERVERID", "cid": 17}}`
	exDeregistration = `{"pe_id": "echo-1", "seq": 1764410460000000, "time": "2026-11-29T10:01:00Z"}`
	exFailureReport  = `{"pe_id": "echo-1", "time": "2026-11-29T10:00:30Z", "reason": "connect refused"}`
	exOutcome        = `{"pe_id": "echo-1", "seq": 1764410400000000, "accepted": false, "error": {"code": "forbidden", "message": "pe_id echo-1 in pool echo belongs to another signer"}}`
	exRecord         = `{"pe_id": "echo-1", "pool": "echo", "lifetime_ms": 5000, "transports": [{"proto": "tcp", "addr": "10.0.0.1:7001"}], "policy": {"name": "round_robin"}, "meta": {"zone": "a"}, "signer": "UAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RLKK", "registered_at": "2026-11-29T10:00:00.0123Z", "updated_at": "2026-11-29T10:00:03.345Z", "last_seq": 1764410403000000, "home_nameserver": "ns1-x7Gh2k", "conn": {"server": "NCXYZEXAMPLESERVERID", "cid": 17}}`
	exResolveRequest = `{"max": 5, "exclude": ["echo-3"], "affinity": "echo-1", "hint": {"zone": "a"}}`
	exResolveAnswer  = `{"scope": "default", "pool": "echo", "policy": "round_robin", "revision": 1234, "elements": [{"pe_id": "echo-1", "transports": [{"proto": "tcp", "addr": "10.0.0.1:7001"}], "policy": {"name": "round_robin"}, "meta": {"zone": "a"}}, {"pe_id": "echo-2", "transports": [{"proto": "tcp", "addr": "10.0.0.2:7001"}], "policy": {"name": "round_robin"}}]}`
	exChange         = `{"scope": "default", "pool": "echo", "revision": 1235, "op": "remove", "pe_id": "echo-1", "reason": "deregistered", "element": {"pe_id": "echo-1", "transports": [{"proto": "tcp", "addr": "10.0.0.1:7001"}], "policy": {"name": "round_robin"}}}`
	exBeat           = `{"id": "ns1-x7Gh2k", "scope": "default", "time": "2026-11-29T10:00:01Z", "started_at": "2026-11-29T09:00:00Z", "key": "UAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RLKK", "pools": 1, "pes": 2, "resolutions": {"echo": 17}}`
	exReports        = `{"UAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RLKK": "2026-11-29T10:00:30Z"}`
	exTombstone      = `{"pe_id": "echo-1", "pool": "echo", "signer": "UAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3RLKK", "last_seq": 1764410409000000, "reason": "deregistered", "removed_at": "2026-11-29T10:00:09.5Z"}`
)

// fuzzNow is the validating clock for a body without a time; a body with
// one is validated at its own time, so that the skew window does not
// refuse every fuzzed time.
var fuzzNow = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

func clockOf(t time.Time) time.Time {
	if t.IsZero() {
		return fuzzNow
	}
	return t
}

// namesField fails unless err is a *events.FieldError naming a field: the
// protocol promises every bad input an error that says which field.
func namesField(t *testing.T, err error) {
	t.Helper()
	var fe *events.FieldError
	if !errors.As(err, &fe) || fe.Field == "" {
		t.Fatalf("error %v (%T) does not name a field", err, err)
	}
}

// roundTrip is the property of every body decoder: events.Decode, then
// check when given, either fail naming the field, or succeed; and then the
// value's encoding decodes and checks again, to a value with the same
// encoding (decode ∘ encode is the identity on what decodes).
func roundTrip[T any](t *testing.T, body []byte, check func(*T) error) {
	t.Helper()
	var v T
	err := events.Decode(body, &v)
	if err == nil && check != nil {
		err = check(&v)
	}
	if err != nil {
		namesField(t, err)
		return
	}
	enc := events.Marshal(&v)
	var again T
	if err := events.Decode(enc, &again); err != nil {
		t.Fatalf("%q decodes, its encoding %s does not: %v", body, enc, err)
	}
	if check != nil {
		if err := check(&again); err != nil {
			t.Fatalf("%q is valid, its encoding %s is not: %v", body, enc, err)
		}
	}
	if enc2 := events.Marshal(&again); !bytes.Equal(enc, enc2) {
		t.Fatalf("%q: encoding changes after a round trip:\n%s\n%s", body, enc, enc2)
	}
}

// fuzzBodies adds the seeds of a body target.
func fuzzBodies(f *testing.F, seeds ...string) {
	for _, s := range append(seeds, ``, `{}`, `null`, `[]`, `{"pe_id": 1}`) {
		f.Add([]byte(s))
	}
}

func FuzzRegistration(f *testing.F) {
	fuzzBodies(f, exRegistration,
		`{"pe_id":"a","seq":1,"time":"2026-01-02T03:04:05.123456789+01:00","transports":[{"proto":"http","addr":"http://x/"}],"policy":{"name":"weighted_round_robin","weight":4294967295}}`,
		`{"pe_id":"a","seq":18446744073709551615,"time":"2026-01-02T03:04:05Z","transports":[{"proto":"udp","addr":"[::1]:53"}],"policy":{"name":"random","priority":-1}}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		roundTrip(t, body, func(r *events.Registration) error { return r.Validate(clockOf(r.Time), events.DefaultClockSkew) })
	})
}

func FuzzDeregistration(f *testing.F) {
	fuzzBodies(f, exDeregistration, `{"pe_id":"échec","seq":1,"time":"2026-11-29T10:01:00Z"}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		roundTrip(t, body, func(d *events.Deregistration) error { return d.Validate(clockOf(d.Time), events.DefaultClockSkew) })
	})
}

func FuzzFailureReport(f *testing.F) {
	fuzzBodies(f, exFailureReport, `{"pe_id":"echo-1","time":"0000-01-01T00:00:00Z"}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		roundTrip(t, body, func(r *events.FailureReport) error { return r.Validate(clockOf(r.Time), events.DefaultClockSkew) })
	})
}

func FuzzResolveRequest(f *testing.F) {
	fuzzBodies(f, exResolveRequest, `{"max":1}`, `{"max":128}`, `{"max":1e2}`, `{"exclude":["a",""]}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		roundTrip(t, body, (*events.ResolveRequest).Validate)
	})
}

func FuzzReadRequest(f *testing.F) {
	fuzzBodies(f, `{"after": "echo-1", "limit": 500, "removed_after": 1230}`, `{"limit":501}`, `{"after":"a.b"}`, `{"removed_after":-1}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		roundTrip(t, body, (*events.ReadRequest).Validate)
	})
}

func FuzzReadAnswer(f *testing.F) {
	fuzzBodies(f, `{"scope": "default", "pool": "echo", "revision": 1240, "records": [{"revision": 1234, "added": 1001, "record": {"pe_id": "echo-2", "pool": "echo"}}], "removed": [{"pe_id": "echo-9", "revision": 1239, "reason": "failed"}], "next": "echo-2"}`)
	f.Fuzz(func(t *testing.T, body []byte) { roundTrip[events.ReadAnswer](t, body, nil) })
}

func FuzzRecord(f *testing.F) {
	fuzzBodies(f, exRecord)
	f.Fuzz(func(t *testing.T, body []byte) { roundTrip[events.Record](t, body, nil) })
}

func FuzzChange(f *testing.F) {
	fuzzBodies(f, exChange, `{"op":"add","element":null}`)
	f.Fuzz(func(t *testing.T, body []byte) { roundTrip[events.Change](t, body, nil) })
}

func FuzzOutcome(f *testing.F) {
	fuzzBodies(f, exOutcome, `{"pe_id":"echo-1","seq":1764410400000000,"accepted":true}`)
	f.Fuzz(func(t *testing.T, body []byte) { roundTrip[events.Outcome](t, body, nil) })
}

func FuzzResolveAnswer(f *testing.F) {
	fuzzBodies(f, exResolveAnswer, `{"error": {"code": "not_found", "message": "no pool echo in scope default"}}`)
	f.Fuzz(func(t *testing.T, body []byte) { roundTrip[events.ResolveAnswer](t, body, nil) })
}

func FuzzNameServerBeat(f *testing.F) {
	fuzzBodies(f, exBeat, `{"id":"x","stopping":true,"resolutions":null}`)
	f.Fuzz(func(t *testing.T, body []byte) { roundTrip[events.NameServerBeat](t, body, nil) })
}

func FuzzTombstone(f *testing.F) {
	fuzzBodies(f, exTombstone, `{"last_seq":18446744073709551615,"removed_at":"x"}`)
	f.Fuzz(func(t *testing.T, body []byte) { roundTrip[events.Tombstone](t, body, nil) })
}

func FuzzReports(f *testing.F) {
	fuzzBodies(f, exReports, `{"U":"2026-11-29T10:00:30.5-02:00"}`)
	f.Fuzz(func(t *testing.T, body []byte) { roundTrip[events.Reports](t, body, nil) })
}

func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{"rsp.default.register.echo", "rsp.default.outcome.echo.echo-1", "rsp.a.resolve.B_1",
		"rsp.default.changes.echo.x", "rsp.Default.register.echo", "rsp.default.svc.echo.e1", "rsp..register.echo", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		scope, kind, pool, err := events.ParseSubject(s)
		if err != nil {
			namesField(t, err)
			return
		}
		if events.CheckScope(scope) != nil || events.CheckPool(pool) != nil {
			t.Fatalf("%q parsed into bad names %q, %q", s, scope, pool)
		}
		if kind != events.KindOutcome {
			if got := events.Subject(scope, kind, pool); got != s {
				t.Fatalf("%q parsed into %q, %q, %q, which make %q", s, scope, kind, pool, got)
			}
			return
		}
		peID, ok := strings.CutPrefix(s, events.Subject(scope, kind, pool)+".")
		if !ok || events.CheckPEID(peID) != nil || events.OutcomeSubject(scope, pool, peID) != s {
			t.Fatalf("outcome subject %q parsed into %q, %q with PE id %q", s, scope, pool, peID)
		}
	})
}

func FuzzSplitKey(f *testing.F) {
	for _, k := range []string{"echo.echo-1", "echo", ".", "a.b.c", ""} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, k string) {
		pool, peID, ok := events.SplitKey(k)
		if ok != strings.Contains(k, ".") || strings.Contains(pool, ".") {
			t.Fatalf("SplitKey(%q) = %q, %q, %v", k, pool, peID, ok)
		}
		if ok && events.Key(pool, peID) != k {
			t.Fatalf("SplitKey(%q) = %q, %q: Key makes %q", k, pool, peID, events.Key(pool, peID))
		}
	})
}

// fixedKey is a key made from a fixed seed, so that the signatures and
// JWTs of the committed seed corpora stay valid.
func fixedKey(tb testing.TB, prefix nkeys.PrefixByte, n byte) (nkeys.KeyPair, string) {
	tb.Helper()
	kp, err := nkeys.FromRawSeed(prefix, bytes.Repeat([]byte{n}, ed25519.SeedSize))
	if err != nil {
		tb.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		tb.Fatal(err)
	}
	return kp, pub
}

// signedBy tells whether sig (base64url, Rsp-Signature) is public's
// Ed25519 signature of the parts joined by "\n", checked without package
// events.
func signedBy(public, sig string, parts ...string) bool {
	raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(public))
	if err != nil {
		return false
	}
	s, err := base64.RawURLEncoding.DecodeString(sig)
	return err == nil && ed25519.Verify(raw, []byte(strings.Join(parts, "\n")), s)
}

// flips returns copies of b with one byte changed: the first, the middle
// and the last.
func flips(b []byte) [][]byte {
	if len(b) == 0 {
		return nil
	}
	var out [][]byte
	for _, i := range slices.Compact([]int{0, len(b) / 2, len(b) - 1}) {
		c := bytes.Clone(b)
		c[i] ^= 0x20
		out = append(out, c)
	}
	return out
}

func FuzzVerifyEvent(f *testing.F) {
	kp, pub := fixedKey(f, nkeys.PrefixByteUser, 1)
	for _, s := range []struct{ subject, body string }{
		{"rsp.default.register.echo", exRegistration}, {"rsp.default.deregister.echo", exDeregistration}, {"", ""}} {
		m := &nats.Msg{Subject: s.subject, Data: []byte(s.body)}
		if err := events.SignEvent(m, kp); err != nil {
			f.Fatal(err)
		}
		f.Add(s.subject, []byte(s.body), pub, m.Header.Get(events.HeaderSignature))
		f.Add(s.subject, []byte(s.body), "", "")
	}
	f.Fuzz(func(t *testing.T, subject string, body []byte, signer, signature string) {
		// Whatever the headers say: accepted only when the signature is
		// the signer's over "<subject>\n<body>".
		m := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{}}
		m.Header.Set(events.HeaderSigner, signer)
		m.Header.Set(events.HeaderSignature, signature)
		if got, err := events.VerifyEvent(m); err != nil {
			namesField(t, err)
		} else if got != signer || !signedBy(signer, signature, subject, string(body)) {
			t.Fatalf("accepted %q signed %q by %q: not a signature of that key (got signer %q)", body, signature, signer, got)
		}
		// Signed for real: accepted, and refused once the body changes.
		m = &nats.Msg{Subject: subject, Data: body}
		if err := events.SignEvent(m, kp); err != nil {
			t.Fatal(err)
		}
		if got, err := events.VerifyEvent(m); err != nil || got != pub {
			t.Fatalf("signed event refused: %q, %v", got, err)
		}
		for _, b := range append(flips(body), append(bytes.Clone(body), 'x')) {
			m.Data = b
			if _, err := events.VerifyEvent(m); err == nil {
				t.Fatalf("the signature of %q verified %q", body, b)
			}
		}
	})
}

// fuzzAccount is an account (key and signing key) and users with keys of
// fixed seeds; its user JWTs are issued anew at each run (they carry the
// time), so the committed seed corpora hold JWTs of the same keys issued
// once.
type fuzzAccount struct {
	claims   *jwt.AccountClaims
	keys     []nkeys.KeyPair // the account key and its signing key
	pe, ns   nkeys.KeyPair
	pePub    string
	nsPub    string
	peTokens []string // issued by the signing key, and by the account key itself
	nsToken  string
	foreign  string // a PE JWT of another account, claiming this one
	trust    events.AnswerTrust
}

func newFuzzAccount(tb testing.TB) *fuzzAccount {
	acctKey, acctPub := fixedKey(tb, nkeys.PrefixByteAccount, 2)
	sk, skPub := fixedKey(tb, nkeys.PrefixByteAccount, 3)
	other, _ := fixedKey(tb, nkeys.PrefixByteAccount, 4)
	a := &fuzzAccount{claims: jwt.NewAccountClaims(acctPub), keys: []nkeys.KeyPair{acctKey, sk},
		trust: events.AnswerTrust{Issuer: skPub, Account: acctPub}}
	a.claims.SigningKeys.Add(skPub)
	a.pe, a.pePub = fixedKey(tb, nkeys.PrefixByteUser, 5)
	a.ns, a.nsPub = fixedKey(tb, nkeys.PrefixByteUser, 6)
	issue := func(user, role string, by nkeys.KeyPair) string {
		tb.Helper()
		uc := jwt.NewUserClaims(user)
		if by != acctKey {
			uc.IssuerAccount = acctPub
		}
		uc.Tags.Add(events.TagRolePrefix+role, events.TagScopePrefix+events.DefaultScope)
		uc.Permissions = nstest.RolePermissions(role, events.DefaultScope)
		tok, err := uc.Encode(by)
		if err != nil {
			tb.Fatal(err)
		}
		return tok
	}
	a.peTokens = []string{issue(a.pePub, events.RolePE, sk), issue(a.pePub, events.RolePE, acctKey)}
	a.nsToken = issue(a.nsPub, events.RoleNameServer, sk)
	a.foreign = issue(a.pePub, events.RolePE, other)
	return a
}

// userClaims is what the chain checks read of a user JWT, decoded
// without the jwt package.
type userClaims struct {
	Sub  string `json:"sub"`
	Iss  string `json:"iss"`
	Nats struct {
		Type          string   `json:"type"`
		IssuerAccount string   `json:"issuer_account"`
		Tags          []string `json:"tags"`
		Pub           struct {
			Allow []string `json:"allow"`
			Deny  []string `json:"deny"`
		} `json:"pub"`
	} `json:"nats"`
}

// issued returns the claims of token if one of keys signed it: header and
// payload, base64url, signed by the key that the payload names as issuer.
func issued(token string, keys []nkeys.KeyPair) (userClaims, bool) {
	var c userClaims
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return c, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(payload, &c) != nil {
		return c, false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return c, false
	}
	for _, k := range keys {
		if pub, _ := k.PublicKey(); pub == c.Iss && k.Verify([]byte(parts[0]+"."+parts[1]), sig) == nil {
			return c, true
		}
	}
	return c, false
}

// mayPublish applies the JWT's publish permissions to subject the way the
// NATS server matches subjects.
func (c userClaims) mayPublish(subject string) bool {
	match := func(filter string) bool { return natsserver.SubjectMatchesFilter(subject, filter) }
	allow := c.Nats.Pub.Allow
	return (len(allow) == 0 || slices.ContainsFunc(allow, match)) && !slices.ContainsFunc(c.Nats.Pub.Deny, match)
}

func FuzzVerifyEventChain(f *testing.F) {
	a := newFuzzAccount(f)
	for _, tok := range append(a.peTokens, a.foreign, a.nsToken, "", "x.y.z") {
		f.Add("rsp.default.register.echo", []byte(exRegistration), tok)
	}
	f.Add("rsp.default.failure.echo", []byte(exFailureReport), a.peTokens[0])
	f.Add("rsp.other.register.echo", []byte(exRegistration), a.peTokens[1])
	now := time.Now()
	event := func(t *testing.T, subject string, body []byte, token string) *nats.Msg {
		m := &nats.Msg{Subject: subject, Data: body}
		if err := events.SignEvent(m, a.pe); err != nil {
			t.Fatal(err)
		}
		events.SetJWT(m, token)
		return m
	}
	f.Fuzz(func(t *testing.T, subject string, body []byte, token string) {
		// Any token: refused naming the field, unless the account
		// issued it to the signer, allowing the subject.
		signer, err := events.VerifyEventChain(event(t, subject, body, token), a.claims, now)
		if err != nil {
			namesField(t, err)
		} else if c, ok := issued(token, a.keys); !ok || c.Sub != a.pePub || signer != a.pePub ||
			(natsserver.IsValidPublishSubject(subject) && !c.mayPublish(subject)) {
			t.Fatalf("accepted %s on %q with JWT %q (signer %q): not issued by the account to the signer for that subject", body, subject, token, signer)
		}
		// The account's own JWTs: accepted where they allow the subject.
		for _, tok := range a.peTokens {
			c, _ := issued(tok, a.keys)
			signer, err := events.VerifyEventChain(event(t, subject, body, tok), a.claims, now)
			if natsserver.IsValidPublishSubject(subject) && (err == nil) != c.mayPublish(subject) {
				t.Fatalf("subject %q: accepted %v (signer %q, err %v), the server's matching says %v", subject, err == nil, signer, err, c.mayPublish(subject))
			}
			if err == nil && signer != a.pePub {
				t.Fatalf("signer %q, want %q", signer, a.pePub)
			}
		}
	})
}

func FuzzVerifyAnswerChain(f *testing.F) {
	a := newFuzzAccount(f)
	for _, tok := range []string{a.nsToken, a.peTokens[0], a.foreign, ""} {
		f.Add("rsp.default.resolve.echo", "n-1", []byte(exResolveAnswer), tok)
	}
	f.Add("", "", []byte{}, a.nsToken)
	signer, err := events.NewSigner(a.ns)
	if err != nil {
		f.Fatal(err)
	}
	pinned := events.AnswerTrust{Keys: []string{a.nsPub}}
	answer := func(t *testing.T, subject, nonce string, body []byte, token string) *nats.Msg {
		m := &nats.Msg{Data: body, Header: nats.Header{}}
		if err := events.SignAnswer(m.Header, signer, subject, nonce, body); err != nil {
			t.Fatal(err)
		}
		m.Header.Set(events.HeaderJWT, token)
		return m
	}
	f.Fuzz(func(t *testing.T, subject, nonce string, body []byte, token string) {
		m := answer(t, subject, nonce, body, token)
		// Any token: trusted only when the account's signing key issued
		// it to the signer, a name server.
		got, err := events.VerifyAnswerChain(m, subject, nonce, a.trust)
		if err != nil {
			namesField(t, err)
		} else if c, ok := issued(token, a.keys[1:]); !ok || c.Sub != a.nsPub || got != a.nsPub || c.Nats.IssuerAccount != a.trust.Account ||
			!slices.ContainsFunc(c.Nats.Tags, func(tag string) bool {
				return strings.EqualFold(strings.TrimSpace(tag), events.TagRolePrefix+events.RoleNameServer)
			}) {
			t.Fatalf("trusted an answer with JWT %q (signer %q): not a name server JWT of the trusted issuer", token, got)
		}
		// A pinned key is trusted whatever the JWT says.
		if got, err := events.VerifyAnswerChain(m, subject, nonce, pinned); err != nil || got != a.nsPub {
			t.Fatalf("pinned key refused: %q, %v", got, err)
		}
		// The name server's JWT: trusted, for this request and body only.
		m = answer(t, subject, nonce, body, a.nsToken)
		if got, err := events.VerifyAnswerChain(m, subject, nonce, a.trust); err != nil || got != a.nsPub {
			t.Fatalf("name server's answer refused: %q, %v", got, err)
		}
		if _, err := events.VerifyAnswerChain(m, subject, nonce+"x", a.trust); err == nil {
			t.Fatal("answer to another nonce trusted")
		}
		for _, b := range flips(body) {
			m.Data = b
			if _, err := events.VerifyAnswerChain(m, subject, nonce, a.trust); err == nil {
				t.Fatalf("the signature of %q verified %q", body, b)
			}
		}
	})
}
