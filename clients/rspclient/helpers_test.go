package rspclient

import (
	"context"
	"errors"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

var (
	startNATS  = nstest.StartNATS
	connect    = nstest.Connect
	testLogger = nstest.Logger
)

func startNameServer(t testing.TB, s *natsserver.Server) *server.NameServer {
	return nstest.StartNameServer(t, s, server.Config{})
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

// lastRevision is the name-space bucket's last revision.
func lastRevision(t testing.TB, c *Client) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.js.Stream(ctx, "KV_"+events.Bucket(c.scope))
	if err != nil {
		t.Fatal(err)
	}
	return st.CachedInfo().State.LastSeq
}
