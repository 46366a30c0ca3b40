// Package nstest starts real rsp parts for tests: an embedded JetStream
// NATS server, connections to it, and name-server replicas, each stopped
// when the test ends; or a JetStream cluster of embedded servers whose
// nodes can be killed and restarted (StartCluster). Like
// net/http/httptest, it is for tests only.
package nstest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// Logger logs to stderr when RSP_TEST_LOG is set, else nowhere: from the
// level it names (debug, info, warn, error), debug for any other value.
func Logger() *slog.Logger {
	v := os.Getenv("RSP_TEST_LOG")
	if v == "" {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	level := slog.LevelDebug
	_ = level.UnmarshalText([]byte(v))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// StartNATS starts an embedded JetStream server on a free loopback port
// with its data in a temporary folder.
func StartNATS(t testing.TB) *natsserver.Server {
	t.Helper()
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Connect opens a connection to s, closed at the end of the test.
func Connect(t testing.TB, s *natsserver.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// StartNameServer starts one replica on its own connection to s.
func StartNameServer(t testing.TB, s *natsserver.Server, cfg server.Config) *server.NameServer {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = Logger()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := server.Start(ctx, Connect(t, s), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	return ns
}
