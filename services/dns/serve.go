package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// listenBoth listens on UDP and TCP at the same port of addr. With port 0,
// TCP takes the port the system gave UDP; when another program holds that
// port for TCP, it tries again with a new one (a few times).
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	_, port, _ := net.SplitHostPort(addr)
	for attempt := 1; ; attempt++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		taddr := pc.LocalAddr().(*net.UDPAddr)
		l, err := net.Listen("tcp", net.JoinHostPort(taddr.IP.String(), fmt.Sprint(taddr.Port)))
		if err == nil {
			return pc, l, nil
		}
		pc.Close()
		if port != "0" || !errors.Is(err, syscall.EADDRINUSE) || attempt == 10 {
			return nil, nil, err
		}
	}
}

// serve answers with h on UDP and TCP at addr until ctx ends, then shuts
// both servers down.
func serve(ctx context.Context, addr string, h dns.Handler, log *slog.Logger, ready func(udp, tcp string)) error {
	pc, l, err := listenBoth(addr)
	if err != nil {
		return err
	}
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: l, Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	errs := make(chan error, 2)
	started := make(chan struct{}, 2)
	udp.NotifyStartedFunc = func() { started <- struct{}{} }
	tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go func() { errs <- udp.ActivateAndServe() }()
	go func() { errs <- tcp.ActivateAndServe() }()
	for range 2 {
		select {
		case <-started:
		case err := <-errs:
			_ = udp.Shutdown()
			_ = tcp.Shutdown()
			return err
		}
	}
	log.Info("listening", "udp", pc.LocalAddr().String(), "tcp", l.Addr().String())
	if ready != nil {
		ready(pc.LocalAddr().String(), l.Addr().String())
	}
	var serr error
	select {
	case <-ctx.Done():
	case serr = <-errs:
		log.Error("serve", "err", serr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	uerr, terr := udp.ShutdownContext(sctx), tcp.ShutdownContext(sctx)
	log.Info("stopped")
	if serr != nil {
		return serr // the other server's shutdown error says nothing more
	}
	return errors.Join(uerr, terr)
}
