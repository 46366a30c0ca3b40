package embedded_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	server "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/nstest"
)

// TestClusterRoutesUseTLS joins two embedded servers over TLS routes and
// sends a message from a client of one to a client of the other.
func TestClusterRoutesUseTLS(t *testing.T) {
	pki := nstest.NewPKI(t)
	tlsc, err := natsconn.ServerTLSFiles(pki.CA, pki.ServerCert, pki.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	// Every port is the kernel's pick (-1), never one probed free
	// beforehand: another package's test may take a probed port first.
	// b routes to a; routes go both ways once joined. Without JetStream,
	// which refuses a cluster member with no routes configured (a): this
	// test is about the routes.
	noJetStream := func(o *server.Options) error { o.JetStream = false; return nil }
	start := func(name, routes string) *embedded.Config {
		return &embedded.Config{
			Name: name, Listen: "127.0.0.1:-1", DataDir: t.TempDir(), TLS: tlsc, ClusterListen: "127.0.0.1:-1", Routes: routes,
			Configure: noJetStream,
		}
	}
	s1, err := embedded.Start(*start("a", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Shutdown()
	toA := fmt.Sprintf("nats-route://127.0.0.1:%d", s1.ClusterAddr().Port)
	s2, err := embedded.Start(*start("b", toA))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown()
	deadline := time.Now().Add(10 * time.Second)
	for s1.NumRoutes() == 0 || s2.NumRoutes() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no TLS route within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctls, _ := natsconn.TLSFiles(pki.CA, pki.ClientCert, pki.ClientKey)
	c1, err := nats.Connect(s1.ClientURL(), nats.Secure(ctls))
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c2, err := nats.Connect(s2.ClientURL(), nats.Secure(ctls))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	sub, _ := c2.SubscribeSync("hello")
	_ = c2.Flush()
	deadline = time.Now().Add(10 * time.Second)
	for {
		_ = c1.Publish("hello", []byte("x"))
		if _, err := sub.NextMsg(200 * time.Millisecond); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("message did not cross the TLS route")
		}
	}
	// A route without a certificate from the CA is refused.
	bad, err := embedded.Start(embedded.Config{Name: "c", Listen: "127.0.0.1:-1", DataDir: t.TempDir(),
		ClusterListen: "127.0.0.1:-1", Routes: toA, Configure: noJetStream})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Shutdown()
	time.Sleep(500 * time.Millisecond)
	if bad.NumRoutes() != 0 {
		t.Fatal("a plain route joined the TLS cluster")
	}
}

// TestStartSaysWhyNot: a server that cannot start (its port taken) makes
// Start fail at once with nats-server's reason, not after ReadyTimeout
// with none.
func TestStartSaysWhyNot(t *testing.T) {
	taken, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:-1", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Shutdown()
	// The reason in the error shows that Start did not wait this out.
	s, err := embedded.Start(embedded.Config{Listen: taken.Addr().String(), DataDir: t.TempDir(), ReadyTimeout: time.Minute})
	if err == nil {
		s.Shutdown()
		t.Fatal("a second server started on a port in use")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("error %q does not say the address is in use", err)
	}
}
