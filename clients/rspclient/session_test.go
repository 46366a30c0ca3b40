package rspclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/services/nameserver/auth"
	"github.com/rserpool/rsp/services/nameserver/nstest"
	"github.com/rserpool/rsp/services/nameserver/server"
)

// liveAddr is the address of a TCP listener that accepts and closes
// connections until the test ends: a tcp transport that passes a name
// server's check of a reported PE.
func liveAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return l.Addr().String()
}

// counting is a handler that echoes the data and counts the session's
// requests in the cookie "n=<count>", continuing from the cookie it gets.
func counting(id string) Handler {
	return func(_ context.Context, req *Request) (*Response, error) {
		n, _ := strconv.Atoi(strings.TrimPrefix(req.Cookie, "n="))
		return &Response{Data: []byte(id + ":" + string(req.Data)), Cookie: "n=" + strconv.Itoa(n+1)}, nil
	}
}

// pe is one served PE on its own connection.
type pe struct {
	nc  *nats.Conn
	srv *Server
}

func servePE(t *testing.T, s *natsserver.Server, pool, id string, h Handler, opts ...ServeOption) pe {
	t.Helper()
	nc := connect(t, s)
	c := newClient(t, nc, WithLogger(testLogger()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, err := c.Serve(ctx, pool, PE{ID: id, Lifetime: 2 * time.Second}, h, opts...)
	if err != nil {
		t.Fatalf("serve %s: %v", id, err)
	}
	t.Cleanup(func() {
		if nc.IsClosed() { // the test killed it
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Close(ctx)
	})
	return pe{nc: nc, srv: srv}
}

func newSession(t *testing.T, c *Client, pool string, opts ...SessionOption) *Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.NewSession(ctx, pool, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func request(t *testing.T, s *Session, data string) *Reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := s.Request(ctx, []byte(data))
	if err != nil {
		t.Fatalf("request %q: %v", data, err)
	}
	return r
}

// reports collects the failure reports published in scope default.
func reports(t *testing.T, s *natsserver.Server) func() []events.FailureReport {
	t.Helper()
	nc := connect(t, s)
	var (
		mu  sync.Mutex
		got []events.FailureReport
	)
	if _, err := nc.Subscribe(events.Subject("default", events.KindFailure, "*"), func(m *nats.Msg) {
		var r events.FailureReport
		if events.Decode(m.Data, &r) == nil {
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() []events.FailureReport {
		mu.Lock()
		defer mu.Unlock()
		return append([]events.FailureReport(nil), got...)
	}
}

// TestSessionStickyCookieFailover: a session stays with its PE and counts
// in its cookie; when the PE's connection dies (no responders), the
// session reports it and the next PE continues the count.
func TestSessionStickyCookieFailover(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	pes := map[string]pe{}
	for _, id := range []string{"a", "b", "c"} {
		pes[id] = servePE(t, s, "echo", id, counting(id))
	}
	reported := reports(t, s)
	pu := newClient(t, connect(t, s), WithLogger(testLogger()))
	sess := newSession(t, pu, "echo")
	eventually(t, "3 PEs in the cache", func() bool { return sess.Cache().Len() == 3 })

	first := request(t, sess, "x")
	for i := 2; i <= 5; i++ {
		r := request(t, sess, "x")
		if r.PEID != first.PEID || r.Cookie != "n="+strconv.Itoa(i) || string(r.Data) != r.PEID+":x" {
			t.Fatalf("request %d: %+v (data %q), want %s with n=%d", i, r, r.Data, first.PEID, i)
		}
	}
	if sess.PE() != first.PEID || sess.Cookie() != "n=5" {
		t.Fatalf("session PE %q cookie %q", sess.PE(), sess.Cookie())
	}

	// Gone, still registered: no responders, once the server noticed (a
	// request sent before that waits for the attempt timeout).
	clients := s.NumClients()
	pes[first.PEID].nc.Close()
	eventually(t, "the server saw the PE's connection close", func() bool { return s.NumClients() < clients })
	r := request(t, sess, "y")
	if r.PEID == first.PEID || r.Cookie != "n=6" {
		t.Fatalf("after the PE died: %+v, want another PE with n=6", r)
	}
	if sess.PE() != r.PEID {
		t.Fatalf("session PE %q, want %q", sess.PE(), r.PEID)
	}
	for _, m := range sess.Cache().Members() {
		if m.PEID == first.PEID {
			t.Fatalf("failed PE %s still pickable", first.PEID)
		}
	}
	eventually(t, "a failure report", func() bool {
		rs := reported()
		return len(rs) == 1 && rs[0].PEID == first.PEID && rs[0].Reason == "no responders"
	})
}

// TestSessionAttemptTimeout: a PE that hangs is failed after the attempt
// timeout; a handler's error comes back as a *ServiceError without
// failover.
func TestSessionAttemptTimeout(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	var hang atomic.Bool
	hangs := func(ctx context.Context, req *Request) (*Response, error) {
		if hang.Load() {
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
		if string(req.Data) == "fail" {
			return nil, errors.New("cannot\nfail")
		}
		return counting("a")(ctx, req)
	}
	servePE(t, s, "echo", "a", hangs)
	servePE(t, s, "echo", "b", counting("b"))
	pu := newClient(t, connect(t, s), WithLogger(testLogger()))
	pc, err := pu.Cache(t.Context(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "2 PEs in the cache", func() bool { return pc.Len() == 2 })
	sess := newSession(t, pu, "echo", WithPoolCache(pc), WithAffinity("a"), WithAttemptTimeout(200*time.Millisecond))

	_, err = sess.Request(t.Context(), []byte("fail"))
	var se *ServiceError
	if !errors.As(err, &se) || se.PEID != "a" || se.Message != "cannot fail" {
		t.Fatalf("err = %v, want a ServiceError of a", err)
	}
	if r := request(t, sess, "x"); r.PEID != "a" || r.Cookie != "n=1" {
		t.Fatalf("reply %+v, want a with n=1", r)
	}
	hang.Store(true)
	start := time.Now()
	r := request(t, sess, "x")
	took := time.Since(start)
	if r.PEID != "b" || r.Cookie != "n=2" {
		t.Fatalf("reply %+v, want b with n=2", r)
	}
	if took < 200*time.Millisecond || took > 2*time.Second {
		t.Errorf("failover took %s, want about the attempt timeout (200ms)", took)
	}
	t.Logf("failover from a hung PE took %s (attempt timeout 200ms)", took)
}

// TestSessionNoPE: with no PE to try, a request fails at the session
// timeout with ErrNoPE.
func TestSessionNoPE(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	pu := newClient(t, connect(t, s))
	sess := newSession(t, pu, "nothing", WithSessionTimeout(300*time.Millisecond))
	start := time.Now()
	_, err := sess.Request(t.Context(), []byte("x"))
	if !errors.Is(err, ErrNoPE) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrNoPE at the deadline", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Errorf("gave up after %s, want the session timeout (300ms)", d)
	}
	sess.Close()
	if _, err := sess.Request(t.Context(), []byte("x")); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestServerDrain: a draining PE deregisters at once but keeps serving the
// session that stays with it until it is idle; new sessions go elsewhere;
// afterwards the session fails over with its cookie.
func TestServerDrain(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	a := servePE(t, s, "echo", "a", counting("a"), WithIdle(300*time.Millisecond))
	servePE(t, s, "echo", "b", counting("b"))
	pu := newClient(t, connect(t, s), WithLogger(testLogger()))
	sess := newSession(t, pu, "echo", WithAffinity("a"))
	eventually(t, "2 PEs in the cache", func() bool { return sess.Cache().Len() == 2 })
	if r := request(t, sess, "x"); r.PEID != "a" {
		t.Fatalf("first reply from %s, want a (affinity)", r.PEID)
	}

	drained := make(chan error, 1)
	drainStart := time.Now()
	go func() { drained <- a.srv.Drain(context.Background(), 10*time.Second) }()
	eventually(t, "a out of the pool", func() bool { return !hasID(sess.Cache().Members(), "a") })
	for i := 2; i <= 6; i++ { // 100 ms apart: never idle for 300 ms
		if r := request(t, sess, "x"); r.PEID != "a" || r.Cookie != "n="+strconv.Itoa(i) {
			t.Fatalf("while draining: %+v, want a with n=%d", r, i)
		}
		time.Sleep(100 * time.Millisecond)
	}
	other := newSession(t, pu, "echo")
	for range 3 {
		if r := request(t, other, "x"); r.PEID != "b" {
			t.Fatalf("new session served by %s, want b", r.PEID)
		}
	}
	select {
	case err := <-drained:
		t.Fatalf("drain ended while the session was active: %v", err)
	default:
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("drain did not end within 5s of idleness")
	}
	t.Logf("drain took %s", time.Since(drainStart))
	if r := request(t, sess, "x"); r.PEID != "b" || r.Cookie != "n=7" {
		t.Fatalf("after the drain: %+v, want b with n=7", r)
	}
}

// TestServerWorkers: at most WithWorkers requests are handled at once,
// and checks are answered meanwhile.
func TestServerWorkers(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	var now, peak atomic.Int32
	slow := func(ctx context.Context, req *Request) (*Response, error) {
		n := now.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(300 * time.Millisecond)
		now.Add(-1)
		return &Response{Data: req.Data}, nil
	}
	servePE(t, s, "echo", "a", slow, WithWorkers(2))
	pu := newClient(t, connect(t, s))
	sess := newSession(t, pu, "echo", WithAttemptTimeout(5*time.Second))
	eventually(t, "a in the cache", func() bool { return sess.Cache().Len() == 1 })
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			r, err := sess.Request(t.Context(), []byte(strconv.Itoa(i)))
			if err == nil && string(r.Data) != strconv.Itoa(i) {
				err = fmt.Errorf("reply %q to %d", r.Data, i)
			}
			errs <- err
		})
	}
	// Busy workers do not hold up a name server's check.
	waitFor := time.Now().Add(5 * time.Second)
	for peak.Load() < 2 && time.Now().Before(waitFor) {
		time.Sleep(5 * time.Millisecond)
	}
	m := nats.NewMsg(events.ServiceSubject("default", "echo", "a"))
	m.Header.Set(events.HeaderCheck, "1")
	start := time.Now()
	if _, err := connect(t, s).RequestMsg(m, 5*time.Second); err != nil {
		t.Fatalf("check: %v", err)
	}
	if d := time.Since(start); d > 150*time.Millisecond {
		t.Errorf("check answered after %s while the workers were busy", d)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("peak concurrency %d, want 2", p)
	}
}

// TestSessionDial: Dial fails over from a PE that refuses connections.
func TestSessionDial(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	live, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	go func() {
		for {
			c, err := live.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("hello\n"))
			_ = c.Close()
		}
	}()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close()

	pec := newClient(t, connect(t, s))
	for id, addr := range map[string]string{"dead": deadAddr, "live": live.Addr().String()} {
		reg, err := pec.Register(t.Context(), "tcp", PE{ID: id, Transports: []events.Transport{{Proto: "tcp", Addr: addr}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = reg.Deregister(context.Background()) })
	}
	reported := reports(t, s)
	pu := newClient(t, connect(t, s), WithLogger(testLogger()))
	sess := newSession(t, pu, "tcp", WithAffinity("dead"), WithSessionTimeout(500*time.Millisecond))
	eventually(t, "2 PEs in the cache", func() bool { return sess.Cache().Len() == 2 })
	conn, el, err := sess.Dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, 6)
	if _, err := conn.Read(buf); err != nil || string(buf) != "hello\n" || el.PEID != "live" {
		t.Fatalf("dialed %s, read %q, %v", el.PEID, buf, err)
	}
	eventually(t, "a report of dead", func() bool {
		rs := reported()
		return len(rs) == 1 && rs[0].PEID == "dead"
	})
	// A request needs a "nats" transport, which none has.
	_, err = sess.Request(t.Context(), nil)
	if !errors.Is(err, ErrNoPE) {
		t.Fatalf("request to a pool without nats transports: %v, want ErrNoPE", err)
	}
}

// TestRegistrationConn: registrations name their connection, and a PE
// registers again at once over a new connection after a reconnect.
func TestRegistrationConn(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	spy := connect(t, s)
	bodies := make(chan events.Registration, 16)
	if _, err := spy.Subscribe(events.Subject("default", events.KindRegister, "echo"), func(m *nats.Msg) {
		var r events.Registration
		if events.Decode(m.Data, &r) == nil {
			bodies <- r
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var callerHandler atomic.Int32
	nc.SetReconnectHandler(func(*nats.Conn) { callerHandler.Add(1) })
	c := newClient(t, nc, WithLogger(testLogger()))
	reg, err := c.Register(t.Context(), "echo", PE{ID: "a", Lifetime: time.Minute,
		Transports: []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:1"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reg.Deregister(context.Background()) }()
	cid, _ := nc.GetClientID()
	next := func() events.Registration {
		t.Helper()
		select {
		case b := <-bodies:
			return b
		case <-time.After(5 * time.Second):
			t.Fatal("no registration within 5s")
		}
		return events.Registration{}
	}
	if b := next(); b.Conn == nil || b.Conn.Server != s.ID() || b.Conn.CID != cid {
		t.Fatalf("conn %+v, want server %s cid %d", b.Conn, s.ID(), cid)
	}

	start := time.Now()
	if err := s.DisconnectClientByID(cid); err != nil {
		t.Fatal(err)
	}
	b := next()
	took := time.Since(start)
	newCID, _ := nc.GetClientID()
	if b.Conn == nil || b.Conn.CID == cid || b.Conn.CID != newCID {
		t.Fatalf("after the reconnect: conn %+v, want cid %d (was %d)", b.Conn, newCID, cid)
	}
	t.Logf("registered again over the new connection %s after the old one was closed", took)
	if took > 250*time.Millisecond {
		t.Errorf("re-registration took %s, want < 250ms (the name server's grace)", took)
	}
	// The caller's own handler still runs (callbacks run asynchronously).
	eventually(t, "the caller's reconnect handler ran", func() bool { return callerHandler.Load() == 1 })
}

// TestServerAnswersChecks: a name server's check (header Rsp-Check) gets
// an empty answer at once, without the handler.
func TestServerAnswersChecks(t *testing.T) {
	s := startNATS(t)
	startNameServer(t, s)
	var calls atomic.Int32
	p := servePE(t, s, "echo", "a", func(ctx context.Context, req *Request) (*Response, error) {
		calls.Add(1)
		return &Response{Data: []byte("handled")}, nil
	})
	nc := connect(t, s)
	m := nats.NewMsg(p.srv.Subject())
	m.Header.Set(events.HeaderCheck, "1")
	r, err := nc.RequestMsg(m, 5*time.Second)
	if err != nil || len(r.Data) != 0 || r.Header.Get(HeaderError) != "" || calls.Load() != 0 {
		t.Fatalf("check answered %q %v (%v), handler ran %d times", r.Data, r.Header, err, calls.Load())
	}
	r, err = nc.Request(p.srv.Subject(), []byte("x"), 5*time.Second)
	if err != nil || string(r.Data) != "handled" || calls.Load() != 1 {
		t.Fatalf("request answered %q (%v), handler ran %d times", r.Data, err, calls.Load())
	}
}

// TestReconnectKeepsPE: in operator mode the name server takes out a PE
// whose connection closed, unless it registers again over a new one within
// the grace period (250 ms): a PE whose connection breaks and reconnects
// stays, one whose connection closes for good leaves.
func TestReconnectKeepsPE(t *testing.T) {
	s, st := nstest.StartSecure(t)
	nstest.StartSecureNameServer(t, s, st, "default", server.Config{})
	peCreds, puCreds := st.CredsPath("default", auth.RolePE), st.CredsPath("default", auth.RolePU)
	nc := nstest.ConnectCreds(t, s, peCreds, nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1))
	pe := newClient(t, nc, WithCreds(peCreds), WithLogger(testLogger()))
	pu := newClient(t, nstest.ConnectCreds(t, s, puCreds), WithCreds(puCreds))
	srv, err := pe.Serve(t.Context(), "echo", PE{ID: "a", Lifetime: 30 * time.Second}, counting("a"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !nc.IsClosed() {
			_ = srv.Close(context.Background())
		}
	})
	changes, err := pu.Watch(t.Context(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	if c := nextChange(t, changes); c.Op != events.OpAdd || c.PEID != "a" {
		t.Fatalf("first change %+v, want the add of a", c)
	}
	sess := newSession(t, pu, "echo")
	eventually(t, "a in the cache", func() bool { return sess.Cache().Len() == 1 })

	for range 3 {
		cid, _ := nc.GetClientID()
		if err := s.DisconnectClientByID(cid); err != nil {
			t.Fatal(err)
		}
		eventually(t, "a reconnected", func() bool {
			n, _ := nc.GetClientID()
			return nc.IsConnected() && n != cid
		})
		select {
		case c := <-changes:
			t.Fatalf("after a reconnect: change %+v, want none", c)
		case <-time.After(time.Second): // 4 times the grace
		}
		if r := request(t, sess, "x"); r.PEID != "a" {
			t.Fatalf("reply from %s", r.PEID)
		}
	}

	// Closed for good: out after the grace, long before its lifetime.
	start := time.Now()
	nc.Close()
	c := nextChange(t, changes)
	if c.Op != events.OpRemove || c.PEID != "a" || c.Reason != events.ReasonDisconnected {
		t.Fatalf("after the close: change %+v, want the remove of a (disconnected)", c)
	}
	t.Logf("closed connection: a removed after %s", time.Since(start))
}
