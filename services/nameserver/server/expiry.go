package server

import (
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
)

// expiry turns the store's MaxAge markers (a PE's TTL ran out) into remove
// changes with reason "expired". It reads the bucket's stream through a
// durable consumer that all replicas share, so each marker is announced
// once, and markers written while no name server ran are announced when
// one starts (as long as the marker itself has not expired).
type expiry struct {
	scope   string
	bucket  string
	nc      *nats.Conn
	view    *view
	log     *slog.Logger
	metrics *Metrics
}

func (x *expiry) handle(m jetstream.Msg) error {
	if m.Headers().Get(jetstream.MarkerReasonHeader) != "MaxAge" {
		return nil // a put, a deregistration's purge: changes for those come from the registrar
	}
	key := strings.TrimPrefix(m.Subject(), "$KV."+x.bucket+".")
	poolName, peID, ok := events.SplitKey(key)
	if !ok {
		return nil
	}
	meta, err := m.Metadata()
	if err != nil {
		return err
	}
	ch := events.Change{Scope: x.scope, Pool: poolName, Revision: meta.Sequence.Stream, Op: events.OpRemove, PEID: peID, Reason: events.ReasonExpired}
	if rec, ok := x.view.last(key); ok {
		el := rec.Element()
		ch.Element = &el
	}
	// As for registrations: announce once this replica's view no longer
	// resolves the PE.
	x.view.waitFor(meta.Sequence.Stream, viewWait)
	x.log.Info("PE expired", "pool", poolName, "pe_id", peID, "revision", ch.Revision)
	return publishChange(x.nc, x.metrics, &ch)
}
