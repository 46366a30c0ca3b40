package server

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/nats-io/nats.go"
)

// Every log line about an event names the event, its pool and its PE: the
// registrar puts those attributes in the context of the event's work
// (withEventAttrs), and the replica's logger (eventLogger) adds them to
// each line logged with that context, so that no call site has to repeat
// them and none can forget them.

type logAttrsKey struct{}

// withLogAttrs returns ctx carrying attrs for the lines logged with it.
func withLogAttrs(ctx context.Context, attrs ...slog.Attr) context.Context {
	return context.WithValue(ctx, logAttrsKey{}, attrs)
}

// logAttrsOf are the attributes ctx carries for log lines.
func logAttrsOf(ctx context.Context) []slog.Attr {
	a, _ := ctx.Value(logAttrsKey{}).([]slog.Attr)
	return a
}

// withEventAttrs names the event of msg (its Nats-Msg-Id, else its stream
// sequence), its stream sequence, pool and PE id in ctx.
func withEventAttrs(ctx context.Context, msg *nats.Msg, eventSeq uint64, pool, peID string) context.Context {
	id := ""
	if msg.Header != nil {
		id = msg.Header.Get(nats.MsgIdHdr)
	}
	if id == "" {
		id = strconv.FormatUint(eventSeq, 10)
	}
	return withLogAttrs(ctx, slog.String("event_id", id), slog.Uint64("event_seq", eventSeq),
		slog.String("pool", pool), slog.String("pe_id", peID))
}

// eventLogger wraps l's handler so that lines logged with a context add
// the context's attributes (those the line names itself win).
func eventLogger(l *slog.Logger) *slog.Logger {
	if _, ok := l.Handler().(ctxHandler); ok {
		return l
	}
	return slog.New(ctxHandler{l.Handler()})
}

type ctxHandler struct{ slog.Handler }

func (h ctxHandler) Handle(ctx context.Context, r slog.Record) error {
	if attrs := logAttrsOf(ctx); len(attrs) > 0 {
		own := make(map[string]bool, r.NumAttrs())
		r.Attrs(func(a slog.Attr) bool { own[a.Key] = true; return true })
		for _, a := range attrs {
			if !own[a.Key] {
				r.AddAttrs(a)
			}
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h ctxHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return ctxHandler{h.Handler.WithAttrs(attrs)}
}

func (h ctxHandler) WithGroup(name string) slog.Handler {
	return ctxHandler{h.Handler.WithGroup(name)}
}
