package events

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

func newUser(t *testing.T) (nkeys.KeyPair, string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return kp, pub
}

func signedEvent(t *testing.T, kp nkeys.KeyPair) *nats.Msg {
	t.Helper()
	msg := &nats.Msg{Subject: Subject("default", KindRegister, "echo"), Data: Marshal(goodRegistration())}
	if err := SignEvent(msg, kp); err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestSignVerifyEvent(t *testing.T) {
	kp, pub := newUser(t)
	msg := signedEvent(t, kp)
	if msg.Header.Get(HeaderSigner) != pub {
		t.Fatalf("%s = %q, want %q", HeaderSigner, msg.Header.Get(HeaderSigner), pub)
	}
	// The wire format, checked independently: base64url without padding of
	// an Ed25519 signature over "<subject>\n<body>".
	sigText := msg.Header.Get(HeaderSignature)
	if strings.ContainsAny(sigText, "=+/") {
		t.Fatalf("signature %q is not base64url without padding", sigText)
	}
	sig, err := base64.RawURLEncoding.DecodeString(sigText)
	if err != nil || len(sig) != 64 {
		t.Fatalf("signature: %v, %d bytes", err, len(sig))
	}
	if err := kp.Verify([]byte(msg.Subject+"\n"+string(msg.Data)), sig); err != nil {
		t.Fatalf("signature is not over subject \\n body: %v", err)
	}
	got, err := VerifyEvent(msg)
	if err != nil || got != pub {
		t.Fatalf("VerifyEvent = %q, %v; want %q", got, err, pub)
	}
	// Header names as protocol.md spells them.
	for _, c := range []struct{ got, want string }{
		{HeaderSigner, "Rsp-Signer"}, {HeaderSignature, "Rsp-Signature"}, {HeaderJWT, "Rsp-Jwt"},
		{HeaderNonce, "Rsp-Nonce"}, {HeaderMsgID, "Nats-Msg-Id"},
	} {
		if c.got != c.want {
			t.Errorf("header %q, want %q", c.got, c.want)
		}
	}
}

func TestSignEventKeepsHeaders(t *testing.T) {
	kp, _ := newUser(t)
	msg := &nats.Msg{Subject: "rsp.default.register.echo", Data: []byte(`{}`), Header: nats.Header{}}
	msg.Header.Set(HeaderMsgID, MsgID("echo-1", 1))
	if err := SignEvent(msg, kp); err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get(HeaderMsgID) != "echo-1-1" {
		t.Fatal("SignEvent dropped Nats-Msg-Id")
	}
	if _, err := VerifyEvent(msg); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyEventRefuses(t *testing.T) {
	kp, _ := newUser(t)
	other, otherPub := newUser(t)
	account, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	accountPub, _ := account.PublicKey()
	cases := []struct {
		name   string
		tamper func(m *nats.Msg)
		field  string
	}{
		{"tampered body", func(m *nats.Msg) { m.Data = append([]byte(nil), m.Data...); m.Data[len(m.Data)-2] ^= 1 }, HeaderSignature},
		{"appended body", func(m *nats.Msg) { m.Data = append(append([]byte(nil), m.Data...), ' ') }, HeaderSignature},
		{"empty body", func(m *nats.Msg) { m.Data = nil }, HeaderSignature},
		{"other subject", func(m *nats.Msg) { m.Subject = Subject("default", KindDeregister, "echo") }, HeaderSignature},
		{"other pool", func(m *nats.Msg) { m.Subject = Subject("default", KindRegister, "echo2") }, HeaderSignature},
		{"other signer claimed", func(m *nats.Msg) { m.Header.Set(HeaderSigner, otherPub) }, HeaderSignature},
		{"signed by another key", func(m *nats.Msg) {
			sig, _ := other.Sign([]byte(m.Subject + "\n" + string(m.Data)))
			m.Header.Set(HeaderSignature, base64.RawURLEncoding.EncodeToString(sig))
		}, HeaderSignature},
		{"account key as signer", func(m *nats.Msg) { m.Header.Set(HeaderSigner, accountPub) }, HeaderSigner},
		{"garbage signer", func(m *nats.Msg) { m.Header.Set(HeaderSigner, "Uxyz") }, HeaderSigner},
		{"no signer", func(m *nats.Msg) { m.Header.Del(HeaderSigner) }, HeaderSigner},
		{"no signature", func(m *nats.Msg) { m.Header.Del(HeaderSignature) }, HeaderSignature},
		{"padded signature", func(m *nats.Msg) {
			sig, _ := base64.RawURLEncoding.DecodeString(m.Header.Get(HeaderSignature))
			m.Header.Set(HeaderSignature, base64.URLEncoding.EncodeToString(sig))
		}, HeaderSignature},
		{"std base64 signature", func(m *nats.Msg) {
			sig, _ := base64.RawURLEncoding.DecodeString(m.Header.Get(HeaderSignature))
			m.Header.Set(HeaderSignature, base64.StdEncoding.EncodeToString(sig))
		}, HeaderSignature},
		{"truncated signature", func(m *nats.Msg) { s := m.Header.Get(HeaderSignature); m.Header.Set(HeaderSignature, s[:len(s)-4]) }, HeaderSignature},
		{"no headers", func(m *nats.Msg) { m.Header = nil }, HeaderSigner},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg := signedEvent(t, kp)
			if _, err := VerifyEvent(msg); err != nil {
				t.Fatalf("untampered: %v", err)
			}
			c.tamper(msg)
			signer, err := VerifyEvent(msg)
			if err == nil {
				t.Fatalf("VerifyEvent accepted it, signer %q", signer)
			}
			if signer != "" {
				t.Errorf("VerifyEvent returned signer %q with its error", signer)
			}
			if got := fieldOf(t, err); got != c.field {
				t.Errorf("error names %q, want %q: %v", got, c.field, err)
			}
		})
	}
}

func TestSignVerifyAnswer(t *testing.T) {
	kp, pub := newUser(t)
	subject := Subject("default", KindResolve, "echo")
	body := Marshal(ResolveAnswer{Scope: "default", Pool: "echo", Policy: "round_robin", Revision: 7, Elements: []Element{{PEID: "echo-1"}}})
	answer := func(nonce string) *nats.Msg {
		m := &nats.Msg{Data: body, Header: nats.Header{}}
		if err := SignAnswer(m.Header, kp, subject, nonce, body); err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := answer("n-1")
	got, err := VerifyAnswer(m, subject, "n-1")
	if err != nil || got != pub {
		t.Fatalf("VerifyAnswer = %q, %v; want %q", got, err, pub)
	}
	// The wire format: over "<request subject>\n<nonce>\n<body>".
	sig, err := base64.RawURLEncoding.DecodeString(m.Header.Get(HeaderSignature))
	if err != nil {
		t.Fatal(err)
	}
	if err := kp.Verify([]byte(subject+"\nn-1\n"+string(body)), sig); err != nil {
		t.Fatalf("signature is not over subject \\n nonce \\n body: %v", err)
	}
	// An empty nonce still signs.
	if _, err := VerifyAnswer(answer(""), subject, ""); err != nil {
		t.Fatalf("empty nonce: %v", err)
	}

	other, otherPub := newUser(t)
	cases := []struct {
		name           string
		msg            *nats.Msg
		subject, nonce string
	}{
		{"wrong nonce", answer("n-1"), subject, "n-2"},
		{"nonce missing", answer("n-1"), subject, ""},
		{"unexpected nonce", answer(""), subject, "n-1"},
		{"replayed to another pool", answer("n-1"), Subject("default", KindResolve, "echo2"), "n-1"},
		{"tampered body", func() *nats.Msg {
			m := answer("n-1")
			m.Data = []byte(`{"error":{"code":"not_found","message":"x"}}`)
			return m
		}(), subject, "n-1"},
		{"other signer claimed", func() *nats.Msg { m := answer("n-1"); m.Header.Set(HeaderSigner, otherPub); return m }(), subject, "n-1"},
		{"no signature", func() *nats.Msg { m := answer("n-1"); m.Header.Del(HeaderSignature); return m }(), subject, "n-1"},
		{"event signature", func() *nats.Msg {
			// signed as an event over "<subject>\n<body>": not a valid answer signature.
			m := &nats.Msg{Subject: subject, Data: body}
			if err := SignEvent(m, other); err != nil {
				t.Fatal(err)
			}
			return m
		}(), subject, ""},
	}
	for _, c := range cases {
		signer, err := VerifyAnswer(c.msg, c.subject, c.nonce)
		if err == nil {
			t.Errorf("%s: VerifyAnswer accepted it, signer %q", c.name, signer)
			continue
		}
		var fe *FieldError
		if signer != "" || !strings.HasPrefix(err.Error(), "answer: ") || !errors.As(err, &fe) {
			t.Errorf("%s: got %q, %v; want no signer and a wrapped *FieldError", c.name, signer, err)
		}
	}
	if _, err := VerifyAnswer(&nats.Msg{Data: body}, subject, "n-1"); err == nil {
		t.Error("VerifyAnswer accepted an answer without headers")
	}
}

func TestSignAnswerNilHeader(t *testing.T) {
	kp, _ := newUser(t)
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("SignAnswer panicked: %v", r)
		}
	}()
	if err := SignAnswer(nil, kp, "rsp.default.resolve.echo", "n", []byte(`{}`)); err == nil {
		t.Fatal("SignAnswer into a nil header neither panicked nor failed")
	}
}

func TestSignerMatchesKeyPair(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	s, err := NewSigner(kp)
	if err != nil {
		t.Fatal(err)
	}
	a, b := nats.NewMsg("rsp.default.register.p"), nats.NewMsg("rsp.default.register.p")
	a.Data, b.Data = []byte(`{"x":1}`), []byte(`{"x":1}`)
	_ = SignEvent(a, kp)
	_ = SignEvent(b, s)
	if a.Header.Get(HeaderSignature) != b.Header.Get(HeaderSignature) || a.Header.Get(HeaderSigner) != b.Header.Get(HeaderSigner) {
		t.Fatal("Signer and KeyPair sign differently")
	}
	if _, err := VerifyEvent(b); err != nil {
		t.Fatal(err)
	}
}
