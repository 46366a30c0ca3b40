package server

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Pulls of the shared consumers. A pull asks for at most pullBatch
// messages and lasts pullExpiry; the server sends a heartbeat every
// pullHeartbeat while it has nothing, and two missed heartbeats make
// nats.go pull again. So a pull lost with a consumer leader that went
// away (its node died) is replaced within about two seconds.
const (
	eventLanes    = 8
	pullBatch     = 128
	pullExpiry    = 5 * time.Second
	pullHeartbeat = time.Second
)

// consumeSickAfter: a Consume that reported errors (missed heartbeats,
// no responders: its consumer is gone or unreachable) for this long
// without a message in between is stopped and the consumer looked up or
// created again.
const (
	consumeSickAfter  = 5 * time.Second
	consumeSickErrors = 3
)

// supervised keeps one Consume of a shared durable consumer running for
// the replica's life: nats.go's Consume pulls again after a reconnect, a
// leader change or missed heartbeats, but ends for good when the consumer
// was deleted, and keeps failing when it was lost. Then the consumer is
// created again (same config; a durable that still exists is just looked
// up) and consumed anew, with backoff.
type supervised struct {
	what   string
	nc     *nats.Conn
	create func(context.Context) (jetstream.Consumer, error)
	handle func(jetstream.Msg)
	log    *slog.Logger

	mu       sync.Mutex
	cons     jetstream.Consumer // the current consumer, for its lag
	cc       jetstream.ConsumeContext
	stopping bool
	restart  chan struct{}  // the current Consume is sick
	inWork   sync.WaitGroup // messages handed to lanes and not yet done

	// Errors of the current Consume (generation gen) since its last
	// message.
	errMu    sync.Mutex
	gen      int
	errCount int
	firstErr time.Time
}

// consume starts the supervisor of a shared consumer: create makes (or
// finds) the consumer, handle gets each message. The first Consume is
// started (within setupCtx) before it returns; the supervisor runs until
// ctx ends.
//
// With key set, messages are handled on eventLanes goroutines: those of one
// key in the order they came, those of different keys side by side, so
// that one event waiting for the store (a round trip, or a leader
// election) does not hold up the others.
func (n *NameServer) consume(setupCtx, ctx context.Context, nc *nats.Conn, what string, log *slog.Logger,
	create func(context.Context) (jetstream.Consumer, error), handle func(context.Context, jetstream.Msg) error,
	key func(jetstream.Msg) string) error {
	s := &supervised{what: what, nc: nc, create: create, log: log.With("consumer", what),
		restart: make(chan struct{}, 1)}
	work := func(m jetstream.Msg) {
		hctx, cancel := context.WithTimeout(ctx, n.cfg.AckWait)
		defer cancel()
		if err := handle(hctx, m); err != nil {
			level := slog.LevelWarn
			if errors.Is(err, errWaitEarlier) {
				level = slog.LevelDebug
			}
			log.Log(ctx, level, "event left for redelivery", "subject", m.Subject(), "err", err)
			_ = m.NakWithDelay(time.Second)
			return
		}
		_ = m.Ack()
	}
	s.handle = func(m jetstream.Msg) {
		s.healthy()
		work(m)
	}
	if key != nil {
		lanes := make([]chan jetstream.Msg, eventLanes)
		for i := range lanes {
			lanes[i] = make(chan jetstream.Msg, pullBatch)
			n.wg.Go(func() {
				for {
					select {
					case <-ctx.Done():
						// What is left goes to another replica after AckWait.
						for {
							select {
							case <-lanes[i]:
								s.inWork.Done()
							default:
								return
							}
						}
					case m := <-lanes[i]:
						work(m)
						s.inWork.Done()
					}
				}
			})
		}
		s.handle = func(m jetstream.Msg) {
			s.healthy()
			h := fnv.New32a()
			_, _ = h.Write([]byte(key(m)))
			s.inWork.Add(1)
			select {
			case lanes[h.Sum32()%eventLanes] <- m:
			case <-ctx.Done():
				s.inWork.Done()
			}
		}
	}
	if err := s.start(setupCtx); err != nil {
		return err
	}
	n.consumers = append(n.consumers, s)
	n.wg.Go(func() { s.run(ctx) })
	return nil
}

// start creates the consumer and starts consuming it.
func (s *supervised) start(ctx context.Context) error {
	cons, err := s.create(ctx)
	if err != nil {
		return err
	}
	s.errMu.Lock()
	s.gen++
	gen := s.gen
	s.errCount = 0
	s.errMu.Unlock()
	select { // a sick signal of the Consume this one replaces
	case <-s.restart:
	default:
	}
	cc, err := cons.Consume(s.handle,
		// Small pulls: replicas share the events evenly, and a replica that
		// dies holds few of them until AckWait hands them to another.
		jetstream.PullMaxMessages(pullBatch),
		jetstream.PullExpiry(pullExpiry),
		jetstream.PullHeartbeat(pullHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { s.failed(gen, err) }))
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		cc.Stop()
		return nil
	}
	s.cc, s.cons = cc, cons
	return nil
}

// lag is how many messages of the consumer wait for delivery and how
// many wait for an ack.
func (s *supervised) lag(ctx context.Context) (pending uint64, ackPending int, _ error) {
	s.mu.Lock()
	cons := s.cons
	s.mu.Unlock()
	if cons == nil {
		return 0, 0, errors.New("no consumer")
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	return info.NumPending, info.NumAckPending, nil
}

// healthy notes a message: the Consume works.
func (s *supervised) healthy() {
	s.errMu.Lock()
	s.errCount = 0
	s.errMu.Unlock()
}

// failed notes an error of the Consume and asks for a new one once
// errors persisted for consumeSickAfter without a message.
func (s *supervised) failed(gen int, err error) {
	now := time.Now()
	s.errMu.Lock()
	if gen != s.gen {
		s.errMu.Unlock()
		return // a Consume already replaced
	}
	if s.errCount == 0 || now.Sub(s.firstErr) > 6*consumeSickAfter {
		s.errCount, s.firstErr = 0, now // errors long apart are not one outage
	}
	s.errCount++
	sick := s.errCount >= consumeSickErrors && now.Sub(s.firstErr) >= consumeSickAfter
	s.errMu.Unlock()
	if errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, jetstream.ErrConsumerLeadershipChanged) {
		s.log.Debug("consume", "err", err) // nats.go pulls again by itself
	} else {
		s.log.Info("consume", "err", err)
	}
	if sick {
		select {
		case s.restart <- struct{}{}:
		default:
		}
	}
}

// run replaces the Consume when it ended without Stop or is sick, until
// ctx ends.
func (s *supervised) run(ctx context.Context) {
	b := newBackoff(250*time.Millisecond, 5*time.Second)
	for {
		s.mu.Lock()
		cc := s.cc
		s.mu.Unlock()
		var closed <-chan struct{}
		if cc != nil {
			closed = cc.Closed()
		}
		select {
		case <-ctx.Done():
			return
		case <-closed:
			if s.isStopping() || s.nc.IsClosed() {
				return
			}
			s.log.Warn("consume ended: starting it again")
		case <-s.restart:
			if s.isStopping() {
				return
			}
			s.log.Warn("consume keeps failing: looking up the consumer again")
			if cc != nil {
				cc.Stop()
			}
		}
		s.mu.Lock()
		s.cc = nil
		s.mu.Unlock()
		err := backoff.RetryNotify(func() error {
			if s.isStopping() {
				return nil
			}
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return s.start(actx)
		}, backoff.WithContext(b, ctx), func(err error, next time.Duration) {
			s.log.Warn("consumer not available: trying again", "err", err, "in", next.Round(time.Millisecond))
		})
		if err != nil {
			return // ctx ended
		}
		b.Reset()
	}
}

func (s *supervised) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// drain stops taking new messages and lets the ones in work finish: it
// returns once the Consume closed, after wait, or as soon as the
// connection is down (nothing can be acked then: the server hands what
// this replica held to another one after AckWait).
func (s *supervised) drain(wait time.Duration) {
	s.mu.Lock()
	s.stopping = true
	cc := s.cc
	s.mu.Unlock()
	if cc == nil {
		return
	}
	if !s.nc.IsConnected() {
		cc.Stop()
		return
	}
	cc.Drain()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	closed := cc.Closed()
	var worked chan struct{} // closed once the lanes are done
	for {
		select {
		case <-closed:
			// Delivered: now let the lanes finish what they hold.
			closed, worked = nil, make(chan struct{})
			go func() { s.inWork.Wait(); close(worked) }()
		case <-worked:
			return
		case <-deadline.C:
			cc.Stop()
			return
		case <-tick.C:
			if !s.nc.IsConnected() {
				cc.Stop()
				return
			}
		}
	}
}
