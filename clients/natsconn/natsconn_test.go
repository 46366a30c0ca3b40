package natsconn

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestDialUnreachableGivesUpWithinRetry(t *testing.T) {
	start := time.Now()
	_, err := Dial(context.Background(), Config{URLs: "nats://127.0.0.1:1", Timeout: 200 * time.Millisecond, Retry: 600 * time.Millisecond})
	if err == nil || !errors.Is(err, nats.ErrNoServers) {
		t.Fatalf("err = %v, want no servers", err)
	}
	if !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("error %q does not name the URL", err)
	}
	// Bounded: the retry budget plus one backoff step, not for ever.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("gave up after %s", d)
	}
}

func TestDialNeedsURL(t *testing.T) {
	if _, err := Dial(context.Background(), Config{}); err == nil {
		t.Fatal("no URL accepted")
	}
	if _, err := Dial(context.Background(), Config{URLs: "nats://x", Creds: "/no/such.creds"}); err == nil || !strings.Contains(err.Error(), "creds") {
		t.Fatalf("missing creds file: %v", err)
	}
}

func TestTLSFilesErrors(t *testing.T) {
	if _, err := TLSFiles("", "cert.pem", ""); err == nil || !strings.Contains(err.Error(), "--tls-key") {
		t.Fatalf("cert without key: %v", err)
	}
	if _, err := TLSFiles("/no/ca.pem", "", ""); err == nil || !strings.Contains(err.Error(), "CA") {
		t.Fatalf("missing CA: %v", err)
	}
	if c, err := TLSFiles("", "", ""); c != nil || err != nil {
		t.Fatalf("no TLS file: %v, %v; want no TLS config", c, err)
	}
	if _, err := ServerTLSFiles("", "", ""); err == nil {
		t.Fatal("server TLS without a certificate accepted")
	}
}
