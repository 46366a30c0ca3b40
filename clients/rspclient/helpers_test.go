package rspclient

import (
	"errors"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/embedded"
)

// startNATS starts a real embedded JetStream server for one test.
func startNATS(t testing.TB) *natsserver.Server {
	t.Helper()
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func connect(t testing.TB, s *natsserver.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func newClient(t testing.TB, nc *nats.Conn, opts ...Option) *Client {
	t.Helper()
	c, err := New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantField fails unless err is (or wraps) an *events.FieldError on field.
func wantField(t testing.TB, err error, field string) {
	t.Helper()
	var fe *events.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v, want a FieldError on %q", err, field)
	}
	if fe.Field != field {
		t.Fatalf("err = %v names field %q, want %q", err, fe.Field, field)
	}
}
