package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ServeHTTP serves srv on ln until ctx ends (or serving fails), then shuts
// it down, letting requests in flight finish for at most bound. Handlers
// get a context that does not end with ctx: Shutdown ends them in order.
func ServeHTTP(ctx context.Context, srv *http.Server, ln net.Listener, log *slog.Logger, bound time.Duration) error {
	if srv.BaseContext == nil {
		srv.BaseContext = func(net.Listener) context.Context { return context.WithoutCancel(ctx) }
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("HTTP server shutting down", "addr", ln.Addr().String(), "bound", bound)
	sctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
