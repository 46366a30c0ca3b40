package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/events"
)

// resolver is what the gateway needs of an rspclient.Client.
type resolver interface {
	Resolve(ctx context.Context, pool string, req events.ResolveRequest) (*events.ResolveAnswer, error)
}

// gateway serves the HTTP resolution endpoint over one resolver per scope.
type gateway struct {
	scopes  map[string]resolver
	healthy func() error // nil error: ready to resolve
	log     *slog.Logger
}

// handler routes the endpoints and logs each request at debug level.
func (g *gateway) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/scopes/{scope}/pools/{pool}", g.resolve)
	mux.HandleFunc("GET /healthz", g.health)
	return g.accessLog(mux)
}

func (g *gateway) resolve(w http.ResponseWriter, r *http.Request) {
	scope, pool := r.PathValue("scope"), r.PathValue("pool")
	if err := events.CheckScope(scope); err != nil {
		writeFieldError(w, err)
		return
	}
	if err := events.CheckPool(pool); err != nil {
		writeFieldError(w, err)
		return
	}
	req, err := parseQuery(r)
	if err != nil {
		writeFieldError(w, err)
		return
	}
	c, ok := g.scopes[scope]
	if !ok {
		writeError(w, http.StatusNotFound, events.CodeNotFound, "scope "+scope+" is not served by this gateway")
		return
	}
	ans, err := c.Resolve(r.Context(), pool, req)
	if err != nil {
		if r.Context().Err() != nil {
			return // the caller went away: nobody reads the answer
		}
		status, code, msg := classify(err)
		if status >= 500 {
			g.log.Warn("resolve", "scope", scope, "pool", pool, "err", err)
		}
		writeError(w, status, code, msg)
		return
	}
	writeJSON(w, http.StatusOK, events.Marshal(ans))
}

// parseQuery makes the resolution request of max, exclude, affinity and
// hint.<key>; any other parameter is refused, as is a bad value, naming it.
func parseQuery(r *http.Request) (events.ResolveRequest, error) {
	var req events.ResolveRequest
	for key, vals := range r.URL.Query() {
		v := vals[len(vals)-1]
		switch {
		case key == "":
			return req, events.Errf("query", "a parameter without a name (=%s); the names are max, exclude, affinity, hint.<key>", v)
		case key == "max":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > events.MaxMax {
				return req, events.Errf("max", "%q is not an integer in 1..%d", v, events.MaxMax)
			}
			req.Max = n
		case key == "exclude":
			for _, v := range vals {
				for id := range strings.SplitSeq(v, ",") {
					if id = strings.TrimSpace(id); id != "" {
						req.Exclude = append(req.Exclude, id)
					}
				}
			}
		case key == "affinity":
			req.Affinity = v
		case strings.HasPrefix(key, "hint."):
			k := strings.TrimPrefix(key, "hint.")
			if k == "" {
				return req, events.Errf(key, "a hint needs a key: hint.<key>=<value>")
			}
			if req.Hint == nil {
				req.Hint = map[string]string{}
			}
			req.Hint[k] = v
		default:
			return req, events.Errf(key, "unknown query parameter (max, exclude, affinity, hint.<key>)")
		}
	}
	check := req // Validate fills in max
	if err := check.Validate(); err != nil {
		return req, err
	}
	return req, nil
}

// classify maps a Resolve error to an HTTP status and a protocol error.
func classify(err error) (status int, code, msg string) {
	var pe *events.Error
	if errors.As(err, &pe) {
		return statusOf(pe.Code), pe.Code, pe.Message
	}
	var fe *events.FieldError
	if errors.As(err, &fe) {
		return http.StatusBadRequest, events.CodeBadRequest, fe.Error()
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionDraining), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting):
		return http.StatusServiceUnavailable, events.CodeUnavailable, "no name server answered: " + err.Error()
	}
	// An answer refused (bad signature, undecodable): the upstream is at fault.
	return http.StatusBadGateway, events.CodeUnavailable, err.Error()
}

// statusOf is the HTTP status of a protocol error code.
func statusOf(code string) int {
	switch code {
	case events.CodeBadRequest:
		return http.StatusBadRequest
	case events.CodeForbidden:
		return http.StatusForbidden
	case events.CodeNotFound:
		return http.StatusNotFound
	case events.CodeConflict, events.CodeStale:
		return http.StatusConflict
	case events.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadGateway
}

func (g *gateway) health(w http.ResponseWriter, _ *http.Request) {
	if g.healthy != nil {
		if err := g.healthy(); err != nil {
			writeError(w, http.StatusServiceUnavailable, events.CodeUnavailable, err.Error())
			return
		}
	}
	writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
}

func writeFieldError(w http.ResponseWriter, err error) {
	writeError(w, http.StatusBadRequest, events.CodeBadRequest, err.Error())
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, events.Marshal(events.ResolveAnswer{Error: &events.Error{Code: code, Message: msg}}))
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (g *gateway) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		g.log.Debug("http", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery,
			"status", sw.status, "took", time.Since(start).Round(time.Microsecond), "remote", r.RemoteAddr)
	})
}
