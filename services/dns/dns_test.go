package main

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// waitTimeout bounds every wait of these tests.
const waitTimeout = 10 * time.Second

type env struct {
	t    *testing.T
	s    *natsserver.Server
	ns   *server.NameServer
	pe   *rspclient.Client
	addr string // the DNS server's UDP and TCP address
	regs map[string]*rspclient.Registration
}

// newEnv starts NATS, an insecure name server and rsp-dns serving scope
// "default" with o's --max and --ttl (when set).
func newEnv(t *testing.T, o options) *env {
	t.Helper()
	s := nstest.StartNATS(t)
	ns := nstest.StartNameServer(t, s, server.Config{})
	pe, err := rspclient.New(nstest.Connect(t, s), rspclient.WithLogger(nstest.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	o.NATS = s.ClientURL()
	o.scopes = []string{events.DefaultScope}
	o.listen = "127.0.0.1:0"
	o.Data = t.TempDir()
	o.max = max(o.max, 3)
	if o.ttl == 0 {
		o.ttl = time.Second
	}
	o.caches, o.emptyTTL, o.timeout = 100, time.Minute, 5*time.Second
	o.LogLevel, o.LogFormat = "error", "text"
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, func(udp, _ string) { addrs <- udp }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Error("rsp-dns did not stop")
		}
	})
	e := &env{t: t, s: s, ns: ns, pe: pe, regs: map[string]*rspclient.Registration{}}
	select {
	case e.addr = <-addrs:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("rsp-dns did not start")
	}
	return e
}

// register registers PE id in pool with a tcp transport at addr.
func (e *env) register(pool, id, addr string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	r, err := e.pe.Register(ctx, pool, rspclient.PE{ID: id, Transports: []events.Transport{{Proto: "tcp", Addr: addr}}})
	if err != nil {
		e.t.Fatal(err)
	}
	e.regs[id] = r
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		_ = r.Deregister(ctx)
	})
}

func (e *env) query(net, name string, qtype uint16) *dns.Msg {
	e.t.Helper()
	c := &dns.Client{Net: net, Timeout: waitTimeout}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := c.Exchange(m, e.addr)
	if err != nil {
		e.t.Fatalf("%s %s %s: %v", net, name, dns.TypeToString[qtype], err)
	}
	return r
}

// ips is the A/AAAA records of r, in order.
func ips(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	return out
}

// eventually polls cond (each query a real DNS exchange) until it holds,
// at most waitTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", waitTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestARoundRobinUDPAndTCP(t *testing.T) {
	e := newEnv(t, options{max: 3})
	// Distinct loopback IPs, so each PE has its own A record.
	e.register("echo", "pe-1", "127.0.0.1:7001")
	e.register("echo", "pe-2", "127.0.0.2:7002")
	e.register("echo", "pe-3", "127.0.0.3:7003")
	e.register("echo", "pe-4", "127.0.0.4:7004")
	const name = "echo.default.rsp."
	eventually(t, "4 members in the cache", func() bool {
		return len(ips(e.query("udp", name, dns.TypeA))) == 3 && e.cacheLen(t) == 4
	})
	firsts := map[string]bool{}
	var prev []string
	for i := range 8 {
		network := []string{"udp", "tcp"}[i%2]
		r := e.query(network, name, dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
			t.Fatalf("%s: rcode %s, aa %v", network, dns.RcodeToString[r.Rcode], r.Authoritative)
		}
		got := ips(r)
		if len(got) != 3 {
			t.Fatalf("%s: %d A records, want 3 (--max): %v", network, len(got), got)
		}
		for _, rr := range r.Answer {
			if rr.Header().Ttl != 1 {
				t.Errorf("TTL %d, want 1", rr.Header().Ttl)
			}
		}
		if slices.Equal(got, prev) {
			t.Errorf("round robin: answer %d repeats %v", i, got)
		}
		prev = got
		firsts[got[0]] = true
	}
	if len(firsts) != 4 {
		t.Errorf("round robin: first records %v, want all 4 PEs in turn", firsts)
	}
}

// cacheLen is how many registered PEs the server knows, each asked for by
// its own name (<pe_id>.echo.default.rsp.).
func (e *env) cacheLen(t *testing.T) int {
	n := 0
	for id := range e.regs {
		r := e.query("udp", id+".echo.default.rsp.", dns.TypeA)
		if r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1 {
			n++
		}
	}
	return n
}

func TestSRV(t *testing.T) {
	e := newEnv(t, options{})
	e.register("echo", "pe-1", "127.0.0.1:7001")
	e.register("echo", "pe-2", "127.0.0.1:7002")
	const name = "_echo._tcp.default.rsp."
	var r *dns.Msg
	eventually(t, "2 SRV records", func() bool {
		r = e.query("udp", name, dns.TypeSRV)
		return len(r.Answer) == 2
	})
	var ports []int
	targets := map[string]bool{}
	for i, rr := range r.Answer {
		srv, ok := rr.(*dns.SRV)
		if !ok {
			t.Fatalf("answer %d: %T", i, rr)
		}
		ports = append(ports, int(srv.Port))
		targets[srv.Target] = true
		if int(srv.Priority) != i {
			t.Errorf("SRV %d: priority %d, want its rank", i, srv.Priority)
		}
	}
	slices.Sort(ports)
	if !slices.Equal(ports, []int{7001, 7002}) {
		t.Errorf("ports %v, want [7001 7002]", ports)
	}
	if !targets["pe-1.echo.default.rsp."] || !targets["pe-2.echo.default.rsp."] {
		t.Errorf("targets %v", targets)
	}
	if len(r.Extra) != 2 {
		t.Errorf("additionals %v, want the 2 targets' A records", r.Extra)
	}
	for _, rr := range r.Extra {
		if a, ok := rr.(*dns.A); !ok || a.A.String() != "127.0.0.1" || !targets[a.Hdr.Name] {
			t.Errorf("additional %v", rr)
		}
	}
	// Over TCP too, and the targets resolve.
	if r := e.query("tcp", name, dns.TypeSRV); len(r.Answer) != 2 {
		t.Errorf("tcp: %v", r)
	}
	if got := ips(e.query("udp", "pe-2.echo.default.rsp.", dns.TypeA)); !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Errorf("target A: %v", got)
	}
}

func TestNXDOMAINAndREFUSED(t *testing.T) {
	e := newEnv(t, options{})
	for _, network := range []string{"udp", "tcp"} {
		for _, c := range []struct {
			name  string
			qtype uint16
			rcode int
		}{
			{"nopool.default.rsp.", dns.TypeA, dns.RcodeNameError},
			{"_nopool._tcp.default.rsp.", dns.TypeSRV, dns.RcodeNameError},
			{"bad!pool.default.rsp.", dns.TypeA, dns.RcodeNameError},
			{"example.com.", dns.TypeA, dns.RcodeRefused},
			{"echo.other.rsp.", dns.TypeA, dns.RcodeRefused},
			{"default.rsp.", dns.TypeA, dns.RcodeSuccess},
		} {
			r := e.query(network, c.name, c.qtype)
			if r.Rcode != c.rcode {
				t.Errorf("%s %s: %s, want %s", network, c.name, dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
			}
			if c.rcode != dns.RcodeRefused && (len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA) {
				t.Errorf("%s %s: authority %v, want the zone's SOA", network, c.name, r.Ns)
			}
		}
	}
}

func TestDeregisteredDisappears(t *testing.T) {
	e := newEnv(t, options{})
	e.register("echo", "pe-1", "127.0.0.1:7001")
	e.register("echo", "pe-2", "127.0.0.2:7002")
	const name = "echo.default.rsp."
	eventually(t, "both PEs answered", func() bool { return len(ips(e.query("udp", name, dns.TypeA))) == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := e.regs["pe-2"].Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pe-2 gone from the answers", func() bool {
		return slices.Equal(ips(e.query("udp", name, dns.TypeA)), []string{"127.0.0.1"})
	})
	if err := e.regs["pe-1"].Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "an empty pool is NXDOMAIN", func() bool {
		return e.query("udp", name, dns.TypeA).Rcode == dns.RcodeNameError
	})
}

// TestNameServerRestart: a PE dies (its connection closes, insecure mode:
// no disconnect detection) while no name server runs, and the cache holds
// a ghost (a PE announced whose removal never was); once a name server
// runs again, the answers are current within a bound, the live PE in
// every one of them.
func TestNameServerRestart(t *testing.T) {
	e := newEnv(t, options{})
	e.register("echo", "pe-1", "127.0.0.1:7001")
	const name = "echo.default.rsp."
	answers := func() []string {
		got := ips(e.query("udp", name, dns.TypeA))
		slices.Sort(got)
		if !slices.Contains(got, "127.0.0.1") {
			t.Fatalf("the live PE missing from %v", got)
		}
		return got
	}
	eventually(t, "pe-1 answered", func() bool { return len(ips(e.query("udp", name, dns.TypeA))) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	dying := nstest.Connect(t, e.s)
	c2, err := rspclient.New(dying)
	if err != nil {
		t.Fatal(err)
	}
	const lifetime = 600 * time.Millisecond
	if _, err := c2.Register(ctx, "echo", rspclient.PE{ID: "pe-2", Lifetime: lifetime, Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.2:7002"}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pe-2 answered", func() bool { return slices.Equal(answers(), []string{"127.0.0.1", "127.0.0.2"}) })
	// The ghost, at a revision after the cache's read.
	js, err := jetstream.New(dying)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "KV_"+events.Bucket(events.DefaultScope))
	if err != nil {
		t.Fatal(err)
	}
	ghost := events.Change{Scope: events.DefaultScope, Pool: "echo", Revision: st.CachedInfo().State.LastSeq, Op: events.OpAdd, PEID: "ghost",
		Reason: events.ReasonRegistered, Element: &events.Element{PEID: "ghost", Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.9:9"}}}}
	if err := dying.Publish(events.Subject(events.DefaultScope, events.KindChanges, "echo"), events.Marshal(ghost)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the ghost answered", func() bool { return slices.Contains(answers(), "127.0.0.9") })

	e.ns.Stop()
	dying.Close()
	time.Sleep(2 * lifetime) // pe-2's lifetime runs out while no name server runs
	restarted := time.Now()
	nstest.StartNameServer(t, e.s, server.Config{})
	var ghostGone time.Duration
	eventually(t, "only pe-1 answered", func() bool {
		got := answers()
		if ghostGone == 0 && !slices.Contains(got, "127.0.0.9") {
			ghostGone = time.Since(restarted)
		}
		return slices.Equal(got, []string{"127.0.0.1"})
	})
	current := time.Since(restarted)
	if ghostGone > 1500*time.Millisecond {
		t.Errorf("the ghost answered until %s after the restart, want at most 1.5 s", ghostGone)
	}
	if current > lifetime+3*time.Second {
		t.Errorf("answers current %s after the restart, want at most the lifetime + 3 s", current)
	}
	t.Logf("after the name server started again: the ghost gone in %s, the answers current in %s",
		ghostGone.Round(time.Millisecond), current.Round(time.Millisecond))
	// Deregistered while a name server runs (the cleanups stop it first).
	if err := e.regs["pe-1"].Deregister(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestDig(t *testing.T) {
	dig, err := exec.LookPath("dig")
	if err != nil {
		t.Skip("dig not installed: apt-get install dnsutils")
	}
	e := newEnv(t, options{})
	e.register("echo", "pe-1", "127.0.0.1:7001")
	eventually(t, "pe-1 answered", func() bool { return len(ips(e.query("udp", "echo.default.rsp.", dns.TypeA))) == 1 })
	host, port, _ := strings.Cut(e.addr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, dig, "@"+host, "-p", port, "+time=2", "+tries=2", "echo.default.rsp.", "A", "+short").CombinedOutput()
	if err != nil {
		t.Fatalf("dig: %v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "127.0.0.1" {
		t.Errorf("dig +short: %q, want 127.0.0.1", got)
	}
}
