package embedded_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/clients/natsconn"
	"github.com/rserpool/rsp/services/nameserver/embedded"
	"github.com/rserpool/rsp/services/nameserver/nstest"
)

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestClusterRoutesUseTLS joins two embedded servers over TLS routes and
// sends a message from a client of one to a client of the other.
func TestClusterRoutesUseTLS(t *testing.T) {
	pki := nstest.NewPKI(t)
	tlsc, err := natsconn.ServerTLSFiles(pki.CA, pki.ServerCert, pki.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := freePort(t), freePort(t)
	start := func(name string, port, peer int) *embedded.Config {
		return &embedded.Config{
			Name: name, Listen: "127.0.0.1:-1", DataDir: t.TempDir(), TLS: tlsc,
			ClusterListen: fmt.Sprintf("127.0.0.1:%d", port), Routes: fmt.Sprintf("nats-route://127.0.0.1:%d", peer),
		}
	}
	s1, err := embedded.Start(*start("a", p1, p2))
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Shutdown()
	s2, err := embedded.Start(*start("b", p2, p1))
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
		ClusterListen: fmt.Sprintf("127.0.0.1:%d", freePort(t)), Routes: fmt.Sprintf("nats-route://127.0.0.1:%d", p1)})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Shutdown()
	time.Sleep(500 * time.Millisecond)
	if bad.NumRoutes() != 0 {
		t.Fatal("a plain route joined the TLS cluster")
	}
}
