package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rserpool/rsp/clients/rspclient"
	"github.com/rserpool/rsp/events"
)

// picker is what the proxy needs of a *rspclient.PoolCache.
type picker interface {
	Pick(n int, hint map[string]string) []events.Element
	Len() int
	ReportFailure(ctx context.Context, peID, reason string) error
}

var _ picker = (*rspclient.PoolCache)(nil)

// reportTimeout bounds sending one failure report.
const reportTimeout = 5 * time.Second

// proxy splices accepted connections to PEs picked from a pool cache.
type proxy struct {
	pc             picker
	connectTimeout time.Duration
	log            *slog.Logger

	active  atomic.Int64 // connections open now
	total   atomic.Int64 // connections accepted
	failed  atomic.Int64 // connections no PE accepted
	nextID  atomic.Uint64
	conns   sync.WaitGroup // one per open client connection
	reports sync.WaitGroup // failure reports in flight
	mu      sync.Mutex
	open    map[uint64]net.Conn // client connections, closed at the end of a drain
}

func newProxy(pc picker, connectTimeout time.Duration, log *slog.Logger) *proxy {
	return &proxy{pc: pc, connectTimeout: connectTimeout, log: log, open: map[uint64]net.Conn{}}
}

// ListenAndServe listens on addr and serves until ctx ends, then drains.
func (p *proxy) ListenAndServe(ctx context.Context, addr string, drain time.Duration) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return p.Serve(ctx, ln, drain)
}

// Serve accepts connections on ln until ctx ends; then it closes ln, lets
// the open connections finish for at most drain, closes the rest, and
// returns nil. An accept error other than ln closing is returned, after
// the same drain.
func (p *proxy) Serve(ctx context.Context, ln net.Listener, drain time.Duration) error {
	p.log.Info("listening", "addr", ln.Addr().String(), "connect_timeout", p.connectTimeout)
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	var err error
	for {
		conn, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil && !errors.Is(aerr, net.ErrClosed) {
				err = aerr
			}
			break
		}
		id := p.nextID.Add(1)
		p.mu.Lock()
		p.open[id] = conn
		p.mu.Unlock()
		p.conns.Add(1)
		p.total.Add(1)
		p.active.Add(1)
		go func() {
			defer p.conns.Done()
			// A connection accepted is served even if the signal comes now.
			p.handle(context.WithoutCancel(ctx), id, conn)
		}()
	}
	_ = ln.Close()
	p.drain(drain)
	p.reports.Wait()
	return err
}

// drain waits at most d for the open connections, then closes the rest.
func (p *proxy) drain(d time.Duration) {
	start := time.Now()
	p.log.Info("draining", "active", p.active.Load(), "drain_timeout", d)
	done := make(chan struct{})
	go func() { p.conns.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		p.mu.Lock()
		n := len(p.open)
		for _, c := range p.open {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.log.Warn("drain timeout: closing the open connections", "active", n)
		<-done
	}
	p.log.Info("drained", "took", time.Since(start).Round(time.Millisecond),
		"total", p.total.Load(), "failed", p.failed.Load())
}

// handle connects client to a PE and splices them until both sides are done.
func (p *proxy) handle(ctx context.Context, id uint64, client net.Conn) {
	start := time.Now()
	log := p.log.With("conn", id, "client", client.RemoteAddr().String())
	defer func() {
		_ = client.Close()
		p.mu.Lock()
		delete(p.open, id)
		p.mu.Unlock()
		p.active.Add(-1)
	}()
	pe, peID, err := p.connect(ctx, log)
	if err != nil {
		p.failed.Add(1)
		log.Warn("connection closed: no PE accepted it", "err", err, "active", p.active.Load()-1, "total", p.total.Load())
		return
	}
	defer pe.Close()
	log = log.With("pe_id", peID, "pe_addr", pe.RemoteAddr().String())
	log.Info("connection opened", "active", p.active.Load(), "total", p.total.Load())
	up, down := splice(client, pe)
	log.Info("connection closed", "bytes_up", up, "bytes_down", down,
		"took", time.Since(start).Round(time.Millisecond), "active", p.active.Load()-1, "total", p.total.Load())
}

// connect dials the PEs the policy picks, best first, each once, until one
// accepts; a PE that does not is reported failed.
func (p *proxy) connect(ctx context.Context, log *slog.Logger) (net.Conn, string, error) {
	n := p.pc.Len()
	if n == 0 {
		return nil, "", errors.New("the pool has no member")
	}
	var errs []error
	tried := 0
	for _, el := range p.pc.Pick(n, nil) {
		addr, ok := tcpAddr(el)
		if !ok {
			continue
		}
		tried++
		d := net.Dialer{Timeout: p.connectTimeout}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return conn, el.PEID, nil
		}
		if ctx.Err() != nil {
			return nil, "", err
		}
		log.Warn("PE did not accept the connection: reporting it, trying the next", "pe_id", el.PEID, "addr", addr, "err", err)
		errs = append(errs, fmt.Errorf("%s at %s: %w", el.PEID, addr, err))
		p.report(el.PEID, err)
	}
	if tried == 0 {
		return nil, "", fmt.Errorf("none of the %d members has a tcp transport", n)
	}
	return nil, "", errors.Join(errs...)
}

// report reports PE peID failed: the cache drops it at once, the report is
// sent in the background.
func (p *proxy) report(peID string, cause error) {
	p.reports.Add(1)
	go func() {
		defer p.reports.Done()
		ctx, cancel := context.WithTimeout(context.Background(), reportTimeout)
		defer cancel()
		if err := p.pc.ReportFailure(ctx, peID, "tcp connect: "+cause.Error()); err != nil {
			p.log.Warn("failure report not sent", "pe_id", peID, "err", err)
		}
	}()
}

func tcpAddr(el events.Element) (string, bool) {
	for _, t := range el.Transports {
		if t.Proto == rspclient.ProtoTCP && t.Addr != "" {
			return t.Addr, true
		}
	}
	return "", false
}

// closeWriter is a connection that can half-close (*net.TCPConn).
type closeWriter interface{ CloseWrite() error }

// splice copies a to b and b to a until both directions end; the end of
// one direction half-closes the writing side of the other connection, so
// a client's EOF reaches the PE and the PE's answer still comes back.
// It returns the bytes copied a→b and b→a.
func splice(a, b net.Conn) (ab, ba int64) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn, n *int64) {
		defer wg.Done()
		var err error
		*n, err = io.Copy(dst, src)
		if cw, ok := dst.(closeWriter); ok && err == nil {
			if cw.CloseWrite() == nil {
				return
			}
		}
		// An error, or no half-close: end both directions.
		_ = dst.Close()
		_ = src.Close()
	}
	go cp(b, a, &ab)
	go cp(a, b, &ba)
	wg.Wait()
	return ab, ba
}
