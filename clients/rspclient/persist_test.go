package rspclient

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/embedded"
)

// TestRegistrationOutlivesOutages: a PE with a 1 s lifetime registered with
// a real name server, then an outage of five lifetimes: of every name
// server, or of the NATS server itself (its JetStream store kept). The
// registration turns Retrying, then Lost, and neither ends nor changes
// state while the outage lasts; once a name server runs again it is
// Registered, and the PE resolves.
//
// Bound: about 7 s per outage, 20 s at worst.
func TestRegistrationOutlivesOutages(t *testing.T) {
	const lifetime = time.Second
	t.Run("name servers", func(t *testing.T) {
		s := startNATS(t)
		ns := startNameServer(t, s)
		outage(t, s, lifetime, func() { ns.Stop() }, func() { startNameServer(t, s) })
	})
	t.Run("NATS server", func(t *testing.T) {
		dir := t.TempDir()
		s := startEmbedded(t, "127.0.0.1:-1", dir)
		startNameServer(t, s)
		listen := fmt.Sprintf("127.0.0.1:%d", s.Addr().(*net.TCPAddr).Port)
		outage(t, s, lifetime, func() { s.Shutdown(); s.WaitForShutdown() }, func() {
			s := startEmbedded(t, listen, dir)
			// The first name server may come back with its connection;
			// this one surely runs.
			startNameServer(t, s)
		})
	})
}

func startEmbedded(t *testing.T, listen, dir string) *natsserver.Server {
	t.Helper()
	s, err := embedded.Start(embedded.Config{Listen: listen, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// outage registers a PE on s, runs stop, checks the registration through
// five lifetimes, runs restart and checks that the PE is registered and
// resolvable again.
func outage(t *testing.T, s *natsserver.Server, lifetime time.Duration, stop, restart func()) {
	dial := func() *nats.Conn {
		nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	pe := newClient(t, dial(), WithTimeout(500*time.Millisecond), WithLogger(testLogger()))
	pu := newClient(t, dial())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	reg, err := pe.Register(ctx, "keep", PE{ID: "k", Transports: tcp7, Lifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	states := reg.StateChanged()
	wantState(t, states, Registered, time.Second)

	stop()
	wantState(t, states, Retrying, 2*lifetime)
	wantState(t, states, Lost, 2*lifetime)
	stays(t, reg, states, 4*lifetime)

	restart()
	back := time.Now()
	wantState(t, states, Registered, 10*time.Second)
	t.Logf("registered again %s after the restart", time.Since(back).Round(time.Millisecond))
	eventually(t, "k resolvable", func() bool {
		a, err := pu.Resolve(ctx, "keep", events.ResolveRequest{})
		return err == nil && len(a.Elements) == 1 && a.Elements[0].PEID == "k"
	})
	if reg.State() != Registered || reg.Err() != nil {
		t.Fatalf("registration %s, Err %v", reg.State(), reg.Err())
	}
	if err := reg.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
}
