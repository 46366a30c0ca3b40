package main

// Fuzz targets of the DNS front's readers of wire input: transport
// addresses (hostPort) and queries (answer).

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/clients/rspclient"
)

func FuzzHostPort(f *testing.F) {
	for _, s := range []string{"10.0.0.1:7001", "[::1]:53", "[fe80::1%eth0]:80", "[::ffff:10.0.0.1]:7001", "10.0.0.1:65536",
		"10.0.0.1:0080", "10.0.0.1:+80", "::1:53", "[10.0.0.1]:7001", "echo.example:80", "10.0.0.1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		ip, port, ok := hostPort(addr)
		// The same read with the net package's pieces.
		var want netip.Addr
		var wantPort uint64
		wantOK := false
		if host, p, err := net.SplitHostPort(addr); err == nil {
			a, errA := netip.ParseAddr(host)
			n, errP := strconv.ParseUint(p, 10, 16)
			if errA == nil && errP == nil {
				want, wantPort, wantOK = a.Unmap().WithZone(""), n, true
			}
		}
		if ok != wantOK || (ok && (ip != want || uint64(port) != wantPort)) {
			t.Fatalf("hostPort(%q) = %v, %d, %v; net.SplitHostPort, netip.ParseAddr and strconv.ParseUint read %v, %d, %v",
				addr, ip, port, ok, want, wantPort, wantOK)
		}
		if ok && (ip.Zone() != "" || ip.Is4In6()) {
			t.Fatalf("hostPort(%q) = %v: zone or IPv4-mapped address left", addr, ip)
		}
	})
}

// closedClient is an rspclient.Client on a NATS connection that is
// already closed: every pool cache fails at once, with no server.
func closedClient(tb testing.TB) *rspclient.Client {
	tb.Helper()
	nc, err := nats.Connect("nats://127.0.0.1:1", nats.RetryOnFailedConnect(true), nats.MaxReconnects(0))
	if err != nil {
		tb.Fatal(err)
	}
	nc.Close()
	c, err := rspclient.New(nc, rspclient.WithTimeout(time.Second))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// FuzzAnswer answers a query in wire format for scope "default", whose
// pool caches cannot be filled (its NATS connection is closed): every
// path of the name's parsing is taken, up to the cache. The reply must be
// a DNS message that packs, for the query's id, inside the zone rsp.
// only.
func FuzzAnswer(f *testing.F) {
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"echo.default.rsp.", dns.TypeA}, {"_echo._tcp.default.rsp.", dns.TypeSRV}, {"echo-1.echo.default.rsp.", dns.TypeAAAA},
		{"rsp.", dns.TypeSOA}, {"default.rsp.", dns.TypeA}, {"echo.other.rsp.", dns.TypeA}, {"example.com.", dns.TypeA},
		{"a.b.c.default.rsp.", dns.TypeANY}, {"ECHO.DEFAULT.RSP.", dns.TypeA}, {"e\\.cho.default.rsp.", dns.TypeA}} {
		m := new(dns.Msg).SetQuestion(q.name, q.qtype)
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	caches := newCacheSet(context.Background(), map[string]*rspclient.Client{"default": closedClient(f)}, 16, time.Minute, log)
	h := &handler{caches: caches, ttl: 5, max: 3, log: log}
	f.Fuzz(func(t *testing.T, query []byte) {
		req := new(dns.Msg)
		if req.Unpack(query) != nil {
			return
		}
		m := h.answer(req)
		if _, err := m.Pack(); err != nil {
			t.Fatalf("reply to %v does not pack: %v\n%v", req, err, m)
		}
		if m.Id != req.Id || !m.Response {
			t.Fatalf("reply %v to %v", m, req)
		}
		if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
			if m.Rcode == dns.RcodeSuccess {
				t.Fatalf("answered %v", req)
			}
			return
		}
		labels := dns.SplitDomainName(req.Question[0].Name)
		if len(labels) == 0 || !strings.EqualFold(labels[len(labels)-1], "rsp") {
			if m.Rcode != dns.RcodeRefused || m.Authoritative {
				t.Fatalf("name %q outside the zone: reply %v", req.Question[0].Name, m)
			}
		}
		for _, rr := range m.Answer {
			if rr.Header().Rrtype != dns.TypeSOA {
				t.Fatalf("answered %v without a pool cache", rr)
			}
		}
	})
}
