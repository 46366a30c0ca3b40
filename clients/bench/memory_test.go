package bench

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// benchEnv starts an embedded NATS server and one name server; connect
// opens connections that are closed when the test ends.
func benchEnv(t *testing.T) (connect func(string) (*nats.Conn, error)) {
	t.Helper()
	s, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	connect = func(name string) (*nats.Conn, error) {
		nc, err := nats.Connect(s.ClientURL(), nats.Name(name))
		if err == nil {
			t.Cleanup(nc.Close)
		}
		return nc, err
	}
	nc, err := connect("ns")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := server.Start(t.Context(), nc, server.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Stop)
	return connect
}

func TestMeasureMemory(t *testing.T) {
	connect := benchEnv(t)
	nc, err := connect("setup")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var log strings.Builder
	m, err := measureMemory(ctx, nc, connect, 2000, func(f string, a ...any) { log.WriteString(f + "\n") })
	if err != nil {
		t.Fatal(err)
	}
	if m.PEs != 2000 || m.Pools != 200 || m.Resolved != 10 {
		t.Errorf("PEs %d pools %d resolved %d, want 2000, 200, 10", m.PEs, m.Pools, m.Resolved)
	}
	if m.BytesPerPE() <= 0 || m.RecordBytesPerPE() <= 0 {
		t.Errorf("bytes/PE %.0f, record bytes/PE %.0f: want both > 0", m.BytesPerPE(), m.RecordBytesPerPE())
	}
	if m.Start <= 0 || m.Serving < m.Start {
		t.Errorf("start %s, serving %s", m.Start, m.Serving)
	}
	t.Logf("%.0f B/PE (records %.0f B/PE), start %s, serving %s", m.BytesPerPE(), m.RecordBytesPerPE(), m.Start, m.Serving)
	if log.Len() == 0 {
		t.Error("no progress")
	}
}

func TestMeasureChanges(t *testing.T) {
	connect := benchEnv(t)
	pub, err := connect("pub")
	if err != nil {
		t.Fatal(err)
	}
	sub, err := connect("sub")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	c, err := measureChanges(ctx, pub, sub, 5, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]Stats{"add": c.Add, "update": c.Update, "baseline": c.Base} {
		if s.Ops != 5 || s.Errors != 0 || s.P50 <= 0 || s.P99 < s.P50 {
			t.Errorf("%s: %+v", name, s)
		}
	}
	if c.Payload == 0 {
		t.Error("no payload size")
	}
	rep := &Report{Changes: c, Memory: &MemoryResult{PEs: 10, Pools: 1, HeapGrowth: 5000, RecordBytes: 3000, Start: time.Millisecond}}
	var b strings.Builder
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"add notification", "update notification", "| name-server heap per PE (B) | 500 | 300", "met"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
