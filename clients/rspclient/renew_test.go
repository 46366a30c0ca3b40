package rspclient

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
)

// fakeRegistrar stores events in a real RSP_EVENTS stream and answers each
// register/deregister event with the outcome decide gives, so tests can
// make a name server refuse or ignore events at will.
type fakeRegistrar struct {
	mu     sync.Mutex
	seqs   []uint64    // seqs of the register events seen, in order
	at     []time.Time // when each arrived
	decide func(n int, kind events.Kind, seq uint64) *events.Outcome
}

func startFakeRegistrar(t *testing.T, nc *nats.Conn, decide func(n int, kind events.Kind, seq uint64) *events.Outcome) *fakeRegistrar {
	t.Helper()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: events.StreamName, Subjects: events.EventSubjects(), Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	f := &fakeRegistrar{decide: decide}
	sub, err := nc.Subscribe("rsp.*.*.*", func(m *nats.Msg) {
		scope, kind, pool, err := events.ParseSubject(m.Subject)
		if err != nil || (kind != events.KindRegister && kind != events.KindDeregister) {
			return
		}
		if _, err := events.VerifyEvent(m); err != nil {
			t.Errorf("unsigned or badly signed event: %v", err)
			return
		}
		var d events.Deregistration // pe_id and seq, common to both bodies
		if err := events.Decode(m.Data, &d); err != nil {
			t.Errorf("bad event body: %v", err)
			return
		}
		if want := events.MsgID(d.PEID, d.Seq); m.Header.Get(events.HeaderMsgID) != want {
			t.Errorf("Nats-Msg-Id = %q, want %q", m.Header.Get(events.HeaderMsgID), want)
		}
		f.mu.Lock()
		if kind == events.KindRegister {
			f.seqs, f.at = append(f.seqs, d.Seq), append(f.at, time.Now())
		}
		n := len(f.seqs)
		f.mu.Unlock()
		if o := f.decide(n, kind, d.Seq); o != nil {
			o.PEID, o.Seq = d.PEID, d.Seq
			_ = nc.Publish(events.OutcomeSubject(scope, pool, d.PEID), events.Marshal(o))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	_ = nc.Flush()
	return f
}

// startSwitchedRegistrar starts a fake registrar that accepts every event
// while answer is true (it starts true) and answers none while it is false.
func startSwitchedRegistrar(t *testing.T, nc *nats.Conn) (*fakeRegistrar, *atomic.Bool) {
	t.Helper()
	answer := &atomic.Bool{}
	answer.Store(true)
	f := startFakeRegistrar(t, nc, func(int, events.Kind, uint64) *events.Outcome {
		if answer.Load() {
			return accepted()
		}
		return nil
	})
	return f, answer
}

func (f *fakeRegistrar) registers() []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint64(nil), f.seqs...)
}

var tcp7 = []events.Transport{{Proto: "tcp", Addr: "127.0.0.1:7"}}

func accepted() *events.Outcome { return &events.Outcome{Accepted: true} }

func refused(code string) *events.Outcome {
	return &events.Outcome{Error: &events.Error{Code: code, Message: "test says no"}}
}

func TestRegisterRefused(t *testing.T) {
	s := startNATS(t)
	startFakeRegistrar(t, connect(t, s), func(int, events.Kind, uint64) *events.Outcome { return refused(events.CodeConflict) })
	c := newClient(t, connect(t, s))
	start := time.Now()
	_, err := c.Register(context.Background(), "echo", PE{ID: "p", Transports: tcp7})
	var ee *events.Error
	if !errors.As(err, &ee) || ee.Code != events.CodeConflict {
		t.Fatalf("err = %v, want an *events.Error conflict", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("a refusal was retried for %s", time.Since(start))
	}
}

func TestRegisterNoOutcome(t *testing.T) {
	s := startNATS(t)
	startFakeRegistrar(t, connect(t, s), func(int, events.Kind, uint64) *events.Outcome { return nil })
	c := newClient(t, connect(t, s), WithTimeout(500*time.Millisecond))
	start := time.Now()
	_, err := c.Register(context.Background(), "echo", PE{ID: "p", Transports: tcp7})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("gave up after %s, want about the 500ms timeout", d)
	}
}

func TestRenewalTransientFailureRetriedWithNewSeq(t *testing.T) {
	s := startNATS(t)
	// Accept the first registration, then answer "unavailable" twice, then
	// accept again: the renewal must retry with ever higher seqs.
	f := startFakeRegistrar(t, connect(t, s), func(n int, kind events.Kind, _ uint64) *events.Outcome {
		if kind == events.KindRegister && (n == 2 || n == 3) {
			return refused(events.CodeUnavailable)
		}
		return accepted()
	})
	c := newClient(t, connect(t, s))
	r, err := c.Register(context.Background(), "echo", PE{ID: "p", Transports: tcp7, Lifetime: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(f.registers()) < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	seqs := f.registers()
	if len(seqs) < 4 {
		t.Fatalf("saw %d registrations, want ≥ 4", len(seqs))
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Errorf("seq %d after %d", seqs[i], seqs[i-1])
		}
	}
	select {
	case <-r.Done():
		t.Fatalf("registration ended: %v", r.Err())
	default:
	}
	if err := r.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRenewalRefusedEndsRegistration(t *testing.T) {
	s := startNATS(t)
	startFakeRegistrar(t, connect(t, s), func(n int, kind events.Kind, _ uint64) *events.Outcome {
		if kind == events.KindRegister && n > 1 {
			return refused(events.CodeForbidden)
		}
		return accepted()
	})
	c := newClient(t, connect(t, s))
	r, err := c.Register(context.Background(), "echo", PE{ID: "p", Transports: tcp7, Lifetime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("refused renewal did not end the registration")
	}
	var ee *events.Error
	if !errors.As(r.Err(), &ee) || ee.Code != events.CodeForbidden {
		t.Errorf("Err = %v, want an *events.Error forbidden", r.Err())
	}
	if err := r.UpdateLoad(context.Background(), 0.1); !errors.As(err, &ee) {
		t.Errorf("UpdateLoad after the end = %v, want the refusal", err)
	}
}

// TestRenewalKeepsTryingWhenNoNameServerAnswers: with no outcome for
// five lifetimes, the registration turns Retrying, then Lost when its
// lifetime ran out, keeps sending renewals (ever higher seqs, with
// backoff: neither a storm nor a pause) and does not end; once a name
// server answers again it is Registered.
func TestRenewalKeepsTryingWhenNoNameServerAnswers(t *testing.T) {
	s := startNATS(t)
	f, answer := startSwitchedRegistrar(t, connect(t, s))
	c := newClient(t, connect(t, s), WithTimeout(300*time.Millisecond), WithLogger(testLogger()))
	const lifetime = time.Second
	r, err := c.Register(context.Background(), "echo", PE{ID: "p", Transports: tcp7, Lifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Deregister(context.Background())
	states := r.StateChanged()
	wantState(t, states, Registered, time.Second)

	answer.Store(false)
	stopped := time.Now()
	// The renewal due at a third of the lifetime fails: Retrying.
	if sc := wantState(t, states, Retrying, 2*lifetime); sc.Err == nil || errors.Is(sc.Err, ErrLost) {
		t.Errorf("Retrying with Err %v, want the failed attempt's error", sc.Err)
	}
	sc := wantState(t, states, Lost, 2*lifetime)
	if !errors.Is(sc.Err, ErrLost) || !errors.Is(sc.Err, context.DeadlineExceeded) {
		t.Errorf("Lost with Err %v, want ErrLost and the last attempt's timeout", sc.Err)
	}
	if d := sc.At.Sub(stopped); d > lifetime+lifetime/2 {
		t.Errorf("Lost %s after the last accepted renewal could have been sent, want about the %s lifetime", d, lifetime)
	}
	n := len(f.registers())
	stays(t, r, states, 4*lifetime)
	if r.State() != Lost || r.Err() != nil {
		t.Fatalf("after 5 lifetimes unanswered: State %s, Err %v; want Lost, nil", r.State(), r.Err())
	}
	// 4 s of attempts, each stored and so sent a third of a lifetime
	// after the one before (its wait for the outcome bounded by the
	// timeout, 300 ms): some 12, at least 4 on a loaded machine, and
	// fewer than one per 50 ms.
	if sent := len(f.registers()) - n; sent < 4 || sent > 80 {
		t.Errorf("%d renewals sent in 4 lifetimes while no name server answered, want some 8 to 20", sent)
	}

	answer.Store(true)
	back := time.Now()
	wantState(t, states, Registered, lifetime)
	t.Logf("registered again %s after the name server answered again", time.Since(back).Round(time.Millisecond))
	seqs := f.registers()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("seq %d after %d", seqs[i], seqs[i-1])
		}
	}
	if err := r.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sc := wantState(t, states, Ended, time.Second); !errors.Is(sc.Err, ErrDeregistered) {
		t.Errorf("Ended with Err %v, want ErrDeregistered", sc.Err)
	}
	if _, ok := <-states; ok {
		t.Error("StateChanged channel not closed after Ended")
	}
}

// wantState reads the next state within d and fails the test unless it
// is want.
func wantState(t *testing.T, states <-chan StateChange, want State, d time.Duration) StateChange {
	t.Helper()
	select {
	case sc, ok := <-states:
		if !ok {
			t.Fatalf("state channel closed, want %s", want)
		}
		if sc.State != want {
			t.Fatalf("state %s (%v), want %s", sc.State, sc.Err, want)
		}
		return sc
	case <-time.After(d):
		t.Fatalf("not %s within %s", want, d)
	}
	return StateChange{}
}

// stays fails the test if r changes state, or ends, within d.
func stays(t *testing.T, r *Registration, states <-chan StateChange, d time.Duration) {
	t.Helper()
	select {
	case <-r.Done():
		t.Fatalf("registration ended in state %s: %v", r.State(), r.Err())
	case sc := <-states:
		t.Fatalf("state %s (%v), want no change for %s", sc.State, sc.Err, d)
	case <-time.After(d):
	}
}

func TestRenewalConnectionClosedEndsRegistration(t *testing.T) {
	s := startNATS(t)
	startFakeRegistrar(t, connect(t, s), func(int, events.Kind, uint64) *events.Outcome { return accepted() })
	nc := connect(t, s)
	c := newClient(t, nc)
	r, err := c.Register(context.Background(), "echo", PE{ID: "p", Transports: tcp7, Lifetime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	select {
	case <-r.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("registration on a closed connection did not end")
	}
	if !errors.Is(r.Err(), nats.ErrConnectionClosed) || r.State() != Ended {
		t.Errorf("Err %v, State %s; want nats.ErrConnectionClosed, ended", r.Err(), r.State())
	}
}

func TestUpdateLoadSendsAtOnce(t *testing.T) {
	s := startNATS(t)
	nc := connect(t, s)
	var mu sync.Mutex
	var loads []float64
	sub, _ := nc.Subscribe(events.Subject("default", events.KindRegister, "echo"), func(m *nats.Msg) {
		var r events.Registration
		_ = events.Decode(m.Data, &r)
		mu.Lock()
		loads = append(loads, r.Policy.Load)
		mu.Unlock()
	})
	defer sub.Unsubscribe()
	startFakeRegistrar(t, nc, func(int, events.Kind, uint64) *events.Outcome { return accepted() })
	c := newClient(t, connect(t, s))
	r, err := c.Register(context.Background(), "echo", PE{ID: "p", Transports: tcp7, Lifetime: time.Minute, Policy: events.PolicyParams{Name: "least_used", Load: 0.2}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Deregister(context.Background())
	if err := r.UpdateLoad(context.Background(), 0.7); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		mu.Lock()
		n := len(loads)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(loads) != 2 || loads[0] != 0.2 || loads[1] != 0.7 {
		t.Errorf("loads sent = %v, want [0.2 0.7]", loads)
	}
}

// TestRenewalsKeepPaceWithoutOutcomes: renewals that RSP_EVENTS stores but
// no name server answers (they are behind, or down) are still sent a
// third of a lifetime apart, not a third plus the wait for the outcome
// plus backoff: name servers that are behind count each stored renewal at
// the time it was stored, so the pace is what keeps the PE registered.
func TestRenewalsKeepPaceWithoutOutcomes(t *testing.T) {
	s := startNATS(t)
	f, answer := startSwitchedRegistrar(t, connect(t, s))
	c := newClient(t, connect(t, s), WithLogger(testLogger()))
	const lifetime = 3 * time.Second
	r, err := c.Register(context.Background(), "echo", PE{ID: "p", Transports: tcp7, Lifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Deregister(context.Background())
	answer.Store(false)
	states := r.StateChanged()
	wantState(t, states, Registered, time.Second)
	wantState(t, states, Retrying, lifetime)
	n := len(f.registers())
	time.Sleep(2 * lifetime)
	f.mu.Lock()
	at := slices.Clone(f.at[n-1:])
	f.mu.Unlock()
	if len(at) < 4 {
		t.Fatalf("%d renewals stored in %s without outcomes, want about 6", len(at)-1, 2*lifetime)
	}
	// A third of a lifetime apart (1 s); before, each waited half a
	// lifetime for its outcome, then backed off: 1.5 s and more.
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap > lifetime/2 {
			t.Errorf("renewal %d stored %s after the one before, want about %s (a third of the lifetime)", i, gap.Round(time.Millisecond), lifetime/3)
		}
	}
}
