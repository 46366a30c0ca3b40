package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/events"
)

// disconnectAdvisory is what a name server reads of nats-server's
// client_disconnect advisory (io.nats.server.advisory.v1.client_disconnect),
// published on $SYS.ACCOUNT.<account>.DISCONNECT when a client connection
// closes.
type disconnectAdvisory struct {
	Server struct {
		ID string `json:"id"`
	} `json:"server"`
	Client struct {
		ID uint64 `json:"id"`
	} `json:"client"`
	Reason string `json:"reason"`
}

// reasonServerShutdown is the advisory reason of connections a server
// closes as it shuts down (lame duck mode): their clients reconnect to
// another server and register again, so it takes no PE out.
const reasonServerShutdown = "Server Shutdown"

// maxPendingDisconnects bounds the disconnects waiting out their grace
// period; beyond it a disconnect is dropped (logged), and the PE leaves
// when its lifetime ends.
const maxPendingDisconnects = 1 << 16

// removeRetries bounds the tries to remove one PE of a closed connection
// (with backoff up to 2 s, about 20 s in all: longer than a leader
// election).
const removeRetries = 12

// disconnects takes out the PEs whose NATS connection closed: one replica
// (queue group rsp-nameservers) gets each advisory, waits the grace
// period, then removes every PE whose record still names that connection
// (one that registered again over a new connection in the meantime names
// the new one). Deadlines come in order (the grace is the same for all),
// so one goroutine waits them out one after the other.
type disconnects struct {
	grace   time.Duration
	regs    map[string]*registrar // by scope
	log     *slog.Logger
	pending chan pendingDisconnect
}

type pendingDisconnect struct {
	conn events.Conn
	at   time.Time // when the advisory arrived
}

// startDisconnects subscribes to the disconnect advisories of the
// replica's account and starts taking out PEs.
func (n *NameServer) startDisconnects(ctx context.Context, nc *nats.Conn, regs map[string]*registrar) error {
	d := &disconnects{grace: n.cfg.DisconnectGrace, regs: regs, log: n.cfg.Logger, pending: make(chan pendingDisconnect, maxPendingDisconnects)}
	subject := events.DisconnectSubject(n.ident.account)
	sub, err := nc.QueueSubscribe(subject, events.QueueGroup, d.advisory)
	if err != nil {
		return fmt.Errorf("disconnect advisories (%s): %w", subject, err)
	}
	_ = sub.SetPendingLimits(1<<16, 256<<20)
	n.subs = append(n.subs, sub)
	n.disconnects = d
	n.wg.Go(func() { d.run(ctx) })
	d.log.Info("disconnect detection on", "subject", subject, "grace", d.grace)
	return nil
}

func (d *disconnects) advisory(m *nats.Msg) {
	var a disconnectAdvisory
	if err := json.Unmarshal(m.Data, &a); err != nil || a.Server.ID == "" || a.Client.ID == 0 {
		d.log.Debug("ignoring a disconnect advisory that names no connection", "subject", m.Subject, "err", err)
		return
	}
	if a.Reason == reasonServerShutdown {
		d.log.Debug("connection closed by its server's shutdown: its PEs will register again elsewhere", "server", a.Server.ID, "cid", a.Client.ID)
		return
	}
	select {
	case d.pending <- pendingDisconnect{conn: events.Conn{Server: a.Server.ID, CID: a.Client.ID}, at: time.Now()}:
	default:
		d.log.Warn("too many disconnects pending: this one is left to the lifetime", "server", a.Server.ID, "cid", a.Client.ID)
	}
}

func (d *disconnects) run(ctx context.Context) {
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	for {
		var p pendingDisconnect
		select {
		case <-ctx.Done():
			return
		case p = <-d.pending:
		}
		if wait := time.Until(p.at.Add(d.grace)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		d.handle(ctx, p)
	}
}

// maxHoldWait bounds how long a disconnect waits for renewals to be
// storable again before its PEs are removed anyway.
const maxHoldWait = 30 * time.Second

// waitRunning waits (at most maxHoldWait) while g's replica holds
// lifetimes (expiry.go); it tells whether it had to wait.
func (d *disconnects) waitRunning(ctx context.Context, g *registrar) bool {
	if g.view.running() {
		return false
	}
	start := time.Now()
	for !g.view.running() && time.Since(start) < maxHoldWait {
		if !sleep(ctx, sweepInterval) {
			break
		}
	}
	d.log.Info("disconnect waited for renewals to be storable", "scope", g.scope, "waited", time.Since(start).Round(time.Millisecond))
	return true
}

// waitApplied waits (at most maxHoldWait) until every event stored before
// t has been applied, so that a PE that registered again over its new
// connection within the grace is not taken out because the name servers
// are behind; false when ctx ended.
func (d *disconnects) waitApplied(ctx context.Context, g *registrar, t time.Time) bool {
	start := time.Now()
	for {
		upTo, err := g.expiry.appliedNow(ctx)
		if err == nil && !upTo.Before(t) {
			return true
		}
		if time.Since(start) > maxHoldWait {
			d.log.Warn("disconnect: events stored in the grace may not be applied yet; removing anyway", "scope", g.scope, "err", err, "applied_up_to", upTo)
			return true
		}
		if !sleep(ctx, sweepInterval) {
			return false
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// handle removes the PEs that still name p.conn.
func (d *disconnects) handle(ctx context.Context, p pendingDisconnect) {
	for _, g := range d.regs {
		keys := g.view.onConn(p.conn)
		graceEnd := p.at.Add(d.grace)
		if len(keys) > 0 && d.waitRunning(ctx, g) {
			// Renewals could not be stored a moment ago: a PE that
			// reconnected may not have got its registration over the
			// new connection through yet. Give it the grace again.
			if !sleep(ctx, d.grace) {
				return
			}
			graceEnd = time.Now()
			keys = g.view.onConn(p.conn)
		}
		if len(keys) > 0 && !d.waitApplied(ctx, g, graceEnd) {
			return
		}
		for _, key := range keys {
			// The bucket may be electing a leader (seconds): keep trying,
			// so the PE leaves as disconnected, not as expired later.
			b := backoff.WithContext(backoff.WithMaxRetries(newBackoff(100*time.Millisecond, 2*time.Second), removeRetries), ctx)
			err := backoff.Retry(func() error {
				hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				_, err := g.removeIf(hctx, key, events.ReasonDisconnected,
					func(rec *events.Record) bool { return rec.Conn != nil && *rec.Conn == p.conn },
					"server", p.conn.Server, "cid", p.conn.CID, "since_disconnect", time.Since(p.at).Round(time.Microsecond))
				return err
			}, b)
			if err != nil {
				g.log.Warn("PE of a closed connection not removed: it leaves when its lifetime ends", "key", key, "err", err)
			}
		}
	}
}
