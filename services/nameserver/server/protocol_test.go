package server_test

import (
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// TestPlainProtocol speaks rsp with nothing but nats.go, nkeys and JSON
// written by hand, exactly as protocol.md describes it, to prove that the
// contract is enough for a client in any language.
func TestPlainProtocol(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s, server.Config{})
	nc := connect(t, s)

	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	outcomes, _ := nc.SubscribeSync("rsp.default.outcome.echo.echo-1")
	changes, _ := nc.SubscribeSync("rsp.default.changes.echo")

	publishEvent := func(subject, msgID, body string) {
		t.Helper()
		sig, _ := kp.Sign([]byte(subject + "\n" + body))
		m := nats.NewMsg(subject)
		m.Data = []byte(body)
		m.Header.Set("Rsp-Signer", pub)
		m.Header.Set("Rsp-Signature", base64.RawURLEncoding.EncodeToString(sig))
		m.Header.Set("Nats-Msg-Id", msgID)
		// A JetStream publish is a request whose reply is the PubAck.
		ack, err := nc.RequestMsg(m, 5*time.Second)
		if err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
		if a := decode[map[string]any](t, ack.Data); a["stream"] != "RSP_EVENTS" {
			t.Fatalf("PubAck %s", ack.Data)
		}
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	publishEvent("rsp.default.register.echo", "echo-1-42", fmt.Sprintf(`{"pe_id":"echo-1","seq":42,"time":%q,"lifetime_ms":5000,
		"transports":[{"proto":"tcp","addr":"127.0.0.1:7001"}],"policy":{"name":"round_robin","weight":1,"load":0.0},"meta":{"zone":"a"}}`, now))

	out := decode[map[string]any](t, nextMsg(t, outcomes, 5*time.Second).Data)
	if out["accepted"] != true || out["pe_id"] != "echo-1" || out["seq"] != 42.0 {
		t.Fatalf("outcome %v", out)
	}
	ch := decode[map[string]any](t, nextMsg(t, changes, 5*time.Second).Data)
	if ch["op"] != "add" || ch["reason"] != "registered" || ch["pe_id"] != "echo-1" {
		t.Fatalf("change %v", ch)
	}

	// Resolve with an empty body, then with a request body and a nonce.
	ans, err := nc.Request("rsp.default.resolve.echo", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	a := decode[map[string]any](t, ans.Data)
	els, _ := a["elements"].([]any)
	if a["pool"] != "echo" || a["policy"] != "round_robin" || len(els) != 1 {
		t.Fatalf("answer %s", ans.Data)
	}
	req := nats.NewMsg("rsp.default.resolve.echo")
	req.Header.Set("Rsp-Nonce", "n-123")
	req.Data = []byte(`{"max":1}`)
	ans, err = nc.RequestMsg(req, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	signer := ans.Header.Get("Rsp-Signer")
	sig, err := base64.RawURLEncoding.DecodeString(ans.Header.Get("Rsp-Signature"))
	if err != nil {
		t.Fatal(err)
	}
	skp, err := nkeys.FromPublicKey(signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := skp.Verify([]byte("rsp.default.resolve.echo\nn-123\n"+string(ans.Data)), sig); err != nil {
		t.Fatalf("answer signature: %v", err)
	}

	// Unknown pool: not_found.
	ans, _ = nc.Request("rsp.default.resolve.nope", nil, 5*time.Second)
	if e := decode[events.ResolveAnswer](t, ans.Data).Error; e == nil || e.Code != "not_found" {
		t.Fatalf("unknown pool answer %s", ans.Data)
	}

	// Deregister.
	publishEvent("rsp.default.deregister.echo", "echo-1-43", fmt.Sprintf(`{"pe_id":"echo-1","seq":43,"time":%q}`, time.Now().UTC().Format(time.RFC3339Nano)))
	out = decode[map[string]any](t, nextMsg(t, outcomes, 5*time.Second).Data)
	if out["accepted"] != true || out["seq"] != 43.0 {
		t.Fatalf("deregistration outcome %v", out)
	}
	ch = decode[map[string]any](t, nextMsg(t, changes, 5*time.Second).Data)
	if ch["op"] != "remove" || ch["reason"] != "deregistered" {
		t.Fatalf("change %v", ch)
	}
}
