package nstest

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Gate cuts one client connection off its NATS server and lets it back:
// the connection dials through it, and it refuses while cut off.
type Gate struct {
	s      *natsserver.Server
	nc     *nats.Conn
	closed atomic.Bool
	// Reconnected receives at each reconnect of the connection.
	Reconnected chan struct{}
}

// ConnectGated opens a connection to s through a Gate (reconnecting every
// 20 ms while cut off, for ever), closed at the end of the test.
func ConnectGated(t testing.TB, s *natsserver.Server) (*nats.Conn, *Gate) {
	t.Helper()
	g := &Gate{s: s, Reconnected: make(chan struct{}, 16)}
	nc, err := nats.Connect(s.ClientURL(), nats.SetCustomDialer(g), nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1),
		nats.ReconnectHandler(func(*nats.Conn) {
			select {
			case g.Reconnected <- struct{}{}:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	g.nc = nc
	return nc, g
}

// Dial dials while the gate is open.
func (g *Gate) Dial(network, addr string) (net.Conn, error) {
	if g.closed.Load() {
		return nil, errors.New("gate closed")
	}
	return net.Dial(network, addr)
}

// CutOff closes the gate and the connection's server side, and waits
// (at most 10 s) until the client sees it down.
func (g *Gate) CutOff(t testing.TB) {
	t.Helper()
	g.closed.Store(true)
	cid, err := g.nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.s.DisconnectClientByID(cid); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for g.nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("connection still up 10 s after it was cut off")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Open lets the connection back and waits (at most 10 s) for its
// reconnect; it returns when the reconnect happened.
func (g *Gate) Open(t testing.TB) time.Time {
	t.Helper()
	g.closed.Store(false)
	select {
	case <-g.Reconnected:
		return time.Now()
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect within 10 s")
	}
	return time.Time{}
}
