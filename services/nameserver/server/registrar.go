package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
	"github.com/rserpool/rsp/policy"
)

// registrar applies the events of one scope to its bucket.
type registrar struct {
	scope  string
	home   string // this replica's id, recorded as the PE's home name server
	nc     *nats.Conn
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	view   *view
	expiry *expiry // of the same scope and replica
	skew   time.Duration
	// tombLife is how long a removal's tombstone keeps the PE id's owner
	// and last seq (Config.TombstoneLife). The purge marker that carries
	// it has no TTL: it stays the key's last message until the id
	// registers again, because a crash of a NATS server that rebuilds its
	// store can undo the deletion of the record before it, and an expiring
	// marker would then bring that record back. PE records themselves
	// have no TTL either: the name servers expire them (expiry.go).
	tombLife time.Duration
	trust    *scopeTrust // JWT authorization; nil when off
	quotas   *quotas     // per signer (quota.go)
	log      *slog.Logger
	now      func() time.Time

	metrics *Metrics

	// Failure reports (reports.go).
	reports  jetstream.KeyValue // rsp_<scope>_reports
	rs       ReportSettings
	checks   *checker
	noChecks bool
	checkMu  sync.Mutex
	checked  map[string]time.Time // key → last check started here

	streamMu sync.Mutex
	stream   jetstream.Stream // of kv, once looked up
}

// rejection is an event refused with an outcome code.
type rejection struct{ e events.Error }

func reject(code, format string, args ...any) *rejection {
	return &rejection{events.Error{Code: code, Message: fmt.Sprintf(format, args...)}}
}

func badRequest(err error) *rejection { return reject(events.CodeBadRequest, "%v", err) }

func (r *rejection) Error() string { return r.e.Error() }

// handle processes one event message; eventSeq is its sequence in the
// stream RSP_EVENTS, which tells the very event delivered again (an
// earlier delivery may have applied it already) from a replay, and stored
// when the stream stored it. A returned error is a fault of the
// infrastructure (the store was unavailable): the event is left for
// redelivery. Refusals are not errors: they are outcomes.
func (g *registrar) handle(ctx context.Context, msg *nats.Msg, eventSeq uint64, stored time.Time) error {
	_, kind, poolName, err := events.ParseSubject(msg.Subject)
	if err != nil {
		if parts := strings.Split(msg.Subject, "."); len(parts) == 4 {
			kind, poolName = events.Kind(parts[2]), parts[3] // still the token the publisher listens under
		}
	}
	peID, seq := peIDAndSeq(msg.Data)
	if err == nil && kind == events.KindRegister && time.Since(stored) > supersededAfter && g.superseded(poolName, msg.Data, stored) {
		// A renewal from a backlog (the name servers were down or behind)
		// that changes nothing, of a PE renewed since it was stored: its
		// publisher stopped waiting for it, and applying it would only
		// move the time of the last renewal back. Skipping it (no write,
		// no outcome) lets a backlog drain many times faster: each PE's
		// oldest waiting registration is applied, and the renewals stored
		// before that are skipped. New PEs, changes (transports, policy,
		// load, meta, lifetime, connection) and deregistrations are
		// always applied.
		g.log.Debug("renewal from a backlog skipped: the PE was renewed since", "pool", poolName, "pe_id", peID, "seq", seq, "stored", stored)
		return nil
	}
	ctx = withEventAttrs(ctx, msg, eventSeq, poolName, peID)
	var change *events.Change
	if err == nil {
		switch kind {
		case events.KindRegister:
			change, err = g.register(ctx, msg, poolName, markOf(msg, eventSeq, stored))
		case events.KindDeregister:
			change, err = g.deregister(ctx, msg, poolName, markOf(msg, eventSeq, stored))
		case events.KindFailure:
			return g.failure(ctx, msg, poolName, stored)
		default:
			err = events.Errf("subject", "%q is not an event subject", msg.Subject)
		}
	} else {
		err = badRequest(err)
	}
	out := events.Outcome{PEID: peID, Seq: seq, Accepted: err == nil}
	if err != nil {
		var rj *rejection
		if errors.Is(err, errWaitEarlier) {
			return err
		}
		if !errors.As(err, &rj) {
			// The store failed: renewals cannot be applied now, so no
			// lifetime may run out until the probes pass again.
			g.view.interrupt(time.Now())
			return err
		}
		out.Error = &rj.e
		level := slog.LevelInfo
		if time.Since(stored) > supersededAfter {
			// From a backlog (after an outage: thousands, mostly too old
			// for the clock skew); their publishers moved on.
			level = slog.LevelDebug
		}
		g.log.Log(ctx, level, "event refused", "subject", msg.Subject, "seq", seq, "code", rj.e.Code, "reason", rj.e.Message)
	}
	g.metrics.event(g.scope, kind, out.Error)
	if change != nil {
		g.view.waitFor(change.Revision, viewWait)
		g.log.InfoContext(ctx, "event applied", "seq", seq, "op", change.Op, "reason", change.Reason, "revision", change.Revision)
	} else if out.Accepted {
		g.log.DebugContext(ctx, "event applied: a renewal", "seq", seq)
	}
	if tok := subjectToken(poolName); tok != "" {
		if err := g.nc.Publish(events.OutcomeSubject(g.scope, tok, subjectToken(peID)), events.Marshal(out)); err != nil {
			return fmt.Errorf("publish outcome: %w", err)
		}
	}
	if change != nil {
		return publishChange(g.nc, g.metrics, change)
	}
	return nil
}

// publishChange announces ch on its pool's change subject and counts it.
func publishChange(nc *nats.Conn, m *Metrics, ch *events.Change) error {
	if err := nc.Publish(events.Subject(ch.Scope, events.KindChanges, ch.Pool), events.Marshal(ch)); err != nil {
		return fmt.Errorf("publish change: %w", err)
	}
	m.changed(ch)
	return nil
}

// peIDAndSeq reads what an outcome must echo, even from a body that fails
// validation.
func peIDAndSeq(body []byte) (string, uint64) {
	var b struct {
		PEID string `json:"pe_id"`
		Seq  uint64 `json:"seq"`
	}
	_ = json.Unmarshal(body, &b)
	return b.PEID, b.Seq
}

// eventKey is the bucket key (<pool>.<pe_id>) an event of subject with
// body is about; ok is false when the subject or the body does not say.
func eventKey(subject string, body []byte) (key string, ok bool) {
	_, _, pool, err := events.ParseSubject(subject)
	id, _ := peIDAndSeq(body)
	return events.Key(pool, id), err == nil && id != ""
}

// subjectToken makes s usable as one subject token ("_" when it is not).
func subjectToken(s string) string {
	if s == "" || strings.ContainsAny(s, ".*>") || strings.ContainsFunc(s, unicode.IsSpace) {
		return "_"
	}
	return s
}

// verify decodes and validates the event's body, then checks its
// signature. The cheap checks come first: a backlog can hold thousands of
// bad events, and each signature and JWT chain check costs far more than
// the decoding.
//
// Times are checked at stored, when RSP_EVENTS stored the event: the event
// was acknowledged then, and must not become too old because the name
// servers applied it late (they were down, a restart rebuilt a large
// store, a backlog waited). A replay is a new message with its own stored
// time, so the clock-skew rule still bounds it.
func (g *registrar) verify(ctx context.Context, msg *nats.Msg, body interface {
	Validate(time.Time, time.Duration) error
}, stored time.Time) (string, error) {
	if stored.IsZero() {
		stored = g.now()
	}
	if err := events.Decode(msg.Data, body); err != nil {
		return "", badRequest(err)
	}
	if err := body.Validate(stored, g.skew); err != nil {
		return "", badRequest(err)
	}
	var signer string
	var err error
	if g.trust != nil {
		signer, err = g.trust.verify(msg, stored)
		if err != nil {
			g.log.WarnContext(ctx, "event refused by JWT authorization", "signer", msg.Header.Get(events.HeaderSigner), "subject", msg.Subject, "reason", err)
		}
	} else {
		signer, err = events.VerifyEvent(msg)
	}
	if err != nil {
		return "", reject(events.CodeForbidden, "%v", err)
	}
	return signer, nil
}

// entry is the last revision of a key: a PE's record, or the purge
// marker of its removal and the tombstone in it.
type entry struct {
	rec  *events.Record    // nil when the key holds no record
	tomb *events.Tombstone // the removal's tombstone; nil when none (or a marker older than tombstones)
	rev  uint64            // revision of the record or of the marker; 0 when the key has neither
	hdr  nats.Header       // headers of that revision
}

// current reads the last revision of key from the bucket's stream (a
// key-value Get hides purge markers, and with them the tombstones).
func (g *registrar) current(ctx context.Context, key string) (entry, error) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	st, err := g.kvStream(ctx)
	if err != nil {
		return entry{}, fmt.Errorf("read %s: %w", key, err)
	}
	m, err := st.GetLastMsgForSubject(ctx, "$KV."+g.kv.Bucket()+"."+key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return entry{}, nil
	}
	if err != nil {
		return entry{}, fmt.Errorf("read %s: %w", key, err)
	}
	e := entry{rev: m.Sequence, hdr: m.Header}
	if isMarker(m.Header) {
		if len(m.Data) > 0 {
			e.tomb = new(events.Tombstone)
			if err := json.Unmarshal(m.Data, e.tomb); err != nil {
				return entry{}, fmt.Errorf("tombstone of %s is corrupt: %w", key, err)
			}
		}
		return e, nil
	}
	e.rec = new(events.Record)
	if err := json.Unmarshal(m.Data, e.rec); err != nil {
		return entry{}, fmt.Errorf("record %s is corrupt: %w", key, err)
	}
	return e, nil
}

// isMarker tells a delete or purge marker (a removal) from a record.
func isMarker(h nats.Header) bool {
	switch h.Get("KV-Operation") {
	case "PURGE", "DEL":
		return true
	}
	return h.Get(jetstream.MarkerReasonHeader) != ""
}

// heldBy refuses an event of signer with seq, stored at stored, for a PE
// id removed less than life ago: the id is still its owner's, and its
// owner's events must go on above the last seq applied. And an expiry
// stands against the events stored before it: expiry counted every event
// of the PE stored up to the point it had read (a waiting one as a renewal
// at its store time, lookahead.go), and the PE was overdue all the same;
// applied later (a backlog drains after the removal), such an event would
// bring back a PE that died — for one more lifetime.
func heldBy(t *events.Tombstone, signer string, seq uint64, stored, now time.Time, life time.Duration) error {
	switch {
	case t == nil, now.Sub(t.RemovedAt) >= life:
		return nil
	case t.Signer != signer:
		return reject(events.CodeForbidden, "pe_id %s in pool %s belongs to another signer: it was removed (%s) at %s, and stays its signer's for a while after that (a replayed event must not bring it back)",
			t.PEID, t.Pool, t.Reason, t.RemovedAt.Format(time.RFC3339))
	case seq <= t.LastSeq:
		return reject(events.CodeStale, "seq %d is not above the last applied seq %d of pe_id %s (removed: %s)", seq, t.LastSeq, t.PEID, t.Reason)
	case t.Reason == events.ReasonExpired && stored.Before(t.RemovedAt):
		return reject(events.CodeStale, "stored at %s, before pe_id %s expired (%s): a registration stored since brings it back",
			stored.Format(time.RFC3339Nano), t.PEID, t.RemovedAt.Format(time.RFC3339Nano))
	}
	return nil
}

func (g *registrar) register(ctx context.Context, msg *nats.Msg, poolName string, mark eventMark) (*events.Change, error) {
	var reg events.Registration
	signer, err := g.verify(ctx, msg, &reg, mark.stored)
	if err != nil {
		return nil, err
	}
	if err := policy.ValidateParams(reg.Policy.Name, policy.CandidateOf(reg.PEID, 0, reg.Policy, reg.Meta)); err != nil {
		return nil, badRequest(err)
	}
	if pp := g.view.poolPolicy(poolName, reg.PEID); pp != "" && pp != reg.Policy.Name {
		return nil, reject(events.CodeConflict, "pool %s uses policy %s, not %s", poolName, pp, reg.Policy.Name)
	}
	key := events.Key(poolName, reg.PEID)
	first := true
	return retryCAS(ctx, func() (*events.Change, error) {
		// A renewal's first try takes the record from the view: no round
		// trip to the store. The write's compare-and-set catches a view
		// that is behind, and so does a refusal, which is made only on
		// what the store says (errRecheck: the next try reads it).
		var old *events.Record
		var rev uint64
		var tomb *events.Tombstone
		viewed := false
		if first {
			first = false
			if rec, r, ok := g.view.member(key); ok {
				old, rev, viewed = &rec, r, true
			}
		}
		if !viewed {
			e, err := g.current(ctx, key)
			if err != nil {
				return nil, err
			}
			old, rev, tomb = e.rec, e.rev, e.tomb
		}
		now := g.now().UTC()
		rec := events.Record{
			PEID: reg.PEID, Pool: poolName, LifetimeMS: reg.Lifetime().Milliseconds(),
			Transports: reg.Transports, Policy: reg.Policy, Meta: reg.Meta,
			Signer: signer, RegisteredAt: now, UpdatedAt: now, LastSeq: reg.Seq, Home: g.home, Conn: reg.Conn,
		}
		if old == nil {
			if err := heldBy(tomb, signer, reg.Seq, mark.stored, now, g.tombLife); err != nil {
				return nil, err
			}
			if err := g.quotas.admitNew(signer, g.view.ownedBy(signer), now); err != nil {
				return nil, err
			}
			// A create over the key's last revision (0, or its purge
			// marker), with the event's mark: a retry cannot write twice.
			newRev, err := writeKV(ctx, g.js, g.kv.Bucket(), key, events.Marshal(rec), rev, 0, false, mark.header())
			if err != nil {
				return nil, err
			}
			return g.change(newRev, events.OpAdd, events.ReasonRegistered, &rec), nil
		}
		if viewed && (old.Signer != signer || reg.Seq < old.LastSeq || (reg.Seq == old.LastSeq && !g.wroteRev(ctx, rev, mark))) {
			return nil, errRecheck
		}
		if old.Signer != signer {
			return nil, reject(events.CodeForbidden, "pe_id %s in pool %s belongs to another signer", reg.PEID, poolName)
		}
		switch {
		case reg.Seq == old.LastSeq && g.wroteRev(ctx, rev, mark):
			// This very event, applied by an earlier delivery whose ack
			// was lost (a replica died, a consumer leader changed), or
			// the same publish stored twice; its change may have been
			// lost too, so announce the state again (watchers drop a
			// change whose revision they have seen).
			op, reason := events.OpUpdate, events.ReasonUpdated
			if old.RegisteredAt.Equal(old.UpdatedAt) {
				op, reason = events.OpAdd, events.ReasonRegistered
			}
			return g.change(rev, op, reason, old), nil
		case reg.Seq <= old.LastSeq:
			return nil, reject(events.CodeStale, "seq %d is not above the last applied seq %d of pe_id %s", reg.Seq, old.LastSeq, reg.PEID)
		}
		rec.RegisteredAt = old.RegisteredAt
		newRev, err := writeKV(ctx, g.js, g.kv.Bucket(), key, events.Marshal(rec), rev, 0, false, mark.header())
		if err != nil {
			return nil, err
		}
		if sameElement(old, &rec) {
			return nil, nil // a renewal: nothing for watchers
		}
		return g.change(newRev, events.OpUpdate, events.ReasonUpdated, &rec), nil
	})
}

func (g *registrar) deregister(ctx context.Context, msg *nats.Msg, poolName string, mark eventMark) (*events.Change, error) {
	var dereg events.Deregistration
	signer, err := g.verify(ctx, msg, &dereg, mark.stored)
	if err != nil {
		return nil, err
	}
	key := events.Key(poolName, dereg.PEID)
	return retryCAS(ctx, func() (*events.Change, error) {
		e, err := g.current(ctx, key)
		if err != nil {
			return nil, err
		}
		old := e.rec
		switch {
		case old == nil && e.rev != 0 && mark.wrote(e.hdr):
			// This very event, applied by an earlier delivery whose ack
			// was lost: accept and announce again, as for registrations.
			return g.removed(e.rev, poolName, dereg.PEID, key, events.ReasonDeregistered), nil
		case old == nil && !g.expiry.appliedBefore(mark.seq):
			// An earlier event of this PE, its registration, may still be
			// waiting: redelivered after a replica died holding it, it
			// would come after this one and bring the PE back. Not found
			// is decided once every earlier event is applied.
			return nil, errWaitEarlier
		case old == nil:
			return nil, reject(events.CodeNotFound, "no pe_id %s in pool %s", dereg.PEID, poolName)
		case old.Signer != signer:
			return nil, reject(events.CodeForbidden, "pe_id %s in pool %s belongs to another signer", dereg.PEID, poolName)
		case dereg.Seq <= old.LastSeq:
			return nil, reject(events.CodeStale, "seq %d is not above the last applied seq %d of pe_id %s", dereg.Seq, old.LastSeq, dereg.PEID)
		}
		old.LastSeq = dereg.Seq // the tombstone keeps the deregistration's seq
		h := mark.header()
		h.Set(events.HeaderReason, events.ReasonDeregistered)
		newRev, err := writeKV(ctx, g.js, g.kv.Bucket(), key, g.tombstone(old, events.ReasonDeregistered), e.rev, 0, true, h)
		if err != nil {
			return nil, err
		}
		return g.change(newRev, events.OpRemove, events.ReasonDeregistered, old), nil
	})
}

// HeaderEventSeq, on every revision of a key that an event wrote (a PE
// record, a deregistration's purge marker), is the event's sequence in the
// stream RSP_EVENTS, and HeaderEventID its Nats-Msg-Id. An event delivered
// again (its ack was lost: a replica died, a consumer leader changed;
// JetStream may then count it as a first delivery) finds its own sequence;
// the same publish stored twice (sent again by its publisher after a
// stream leader change, when the stream's duplicate detection missed it)
// finds its own message id. Either is accepted again without a second
// write. A replay of a signed event under another message id is refused as
// stale; one under the same id changes nothing either way.
const (
	HeaderEventSeq = "Rsp-Event-Seq"
	HeaderEventID  = "Rsp-Event-Id"
)

// eventMark tells the revisions an event wrote: its stream sequence and
// its Nats-Msg-Id; and when the stream stored it.
type eventMark struct {
	seq    uint64
	id     string
	stored time.Time
}

func markOf(msg *nats.Msg, eventSeq uint64, stored time.Time) eventMark {
	m := eventMark{seq: eventSeq, stored: stored}
	if msg.Header != nil {
		m.id = msg.Header.Get(nats.MsgIdHdr)
	}
	return m
}

// header is what the event's writes carry.
func (m eventMark) header() nats.Header {
	h := nats.Header{}
	if m.seq != 0 {
		h.Set(HeaderEventSeq, strconv.FormatUint(m.seq, 10))
	}
	if m.id != "" {
		h.Set(HeaderEventID, m.id)
	}
	return h
}

// wrote tells whether a message with header h was written by this event.
func (m eventMark) wrote(h nats.Header) bool {
	return (m.seq != 0 && h.Get(HeaderEventSeq) == strconv.FormatUint(m.seq, 10)) ||
		(m.id != "" && h.Get(HeaderEventID) == m.id)
}

// kvStream is the stream of the bucket, looked up once.
func (g *registrar) kvStream(ctx context.Context) (jetstream.Stream, error) {
	g.streamMu.Lock()
	defer g.streamMu.Unlock()
	if g.stream != nil {
		return g.stream, nil
	}
	st, err := g.js.Stream(ctx, "KV_"+g.kv.Bucket())
	if err != nil {
		return nil, err
	}
	g.stream = st
	return st, nil
}

// wroteRev tells whether revision rev of the bucket was written by the
// event of mark.
func (g *registrar) wroteRev(ctx context.Context, rev uint64, mark eventMark) bool {
	if mark.seq == 0 && mark.id == "" {
		return false
	}
	st, err := g.kvStream(ctx)
	if err != nil {
		return false
	}
	m, err := st.GetMsg(ctx, rev)
	return err == nil && mark.wrote(m.Header)
}

// removed is the remove change of key at revision rev, with the last
// element the view knew.
func (g *registrar) removed(rev uint64, poolName, peID, key, reason string) *events.Change {
	ch := &events.Change{Scope: g.scope, Pool: poolName, Revision: rev, Op: events.OpRemove, PEID: peID, Reason: reason}
	if rec, ok := g.view.last(key); ok {
		el := rec.Element()
		ch.Element = &el
	}
	return ch
}

// tombstone is the body of the purge marker that removes rec.
func (g *registrar) tombstone(rec *events.Record, reason string) []byte {
	return events.Marshal(events.Tombstone{PEID: rec.PEID, Pool: rec.Pool, Signer: rec.Signer, LastSeq: rec.LastSeq,
		Reason: reason, RemovedAt: g.now().UTC()})
}

// viewWait bounds how long an outcome waits for this replica's view to
// show the change, so that a PE told "accepted" is resolvable at once.
const viewWait = time.Second

// supersededAfter: a renewal that changes nothing, of a PE renewed since
// it was stored, stored this long before it is handled, is skipped
// (registrar.handle). Events wait milliseconds when nothing is wrong; the
// bound keeps clocks that disagree (the stream's and the name server's)
// from making a fresh renewal look superseded.
const supersededAfter = 2 * time.Second

// superseded tells whether the registration body (of pool) changes
// nothing that the PE's record in the view holds, and the PE was renewed
// at or after stored.
func (g *registrar) superseded(poolName string, body []byte, stored time.Time) bool {
	var reg events.Registration
	if json.Unmarshal(body, &reg) != nil {
		return false
	}
	old, ok := g.view.live(events.Key(poolName, reg.PEID))
	if !ok || old.UpdatedAt.Before(stored) {
		return false
	}
	rec := events.Record{LifetimeMS: reg.Lifetime().Milliseconds(), Transports: reg.Transports, Policy: reg.Policy, Meta: reg.Meta}
	sameConn := (old.Conn == nil && reg.Conn == nil) || (old.Conn != nil && reg.Conn != nil && *old.Conn == *reg.Conn)
	return sameConn && sameElement(&old, &rec)
}

// storeTimeout bounds one read or write of the bucket: a bucket electing
// a leader answers nothing for seconds, and an event that waits for it
// longer holds up the events behind it (it is delivered again).
const storeTimeout = time.Second

// writeKV stores a new revision of key in bucket (or a purge marker)
// over revision rev, with the extra headers hdr and a TTL (none when 0).
// It is a raw publish because kv.Put and kv.Update cannot carry a
// per-message TTL (see nats-facts.md) nor headers.
func writeKV(ctx context.Context, js jetstream.JetStream, bucket, key string, val []byte, rev uint64, ttl time.Duration, purge bool, hdr nats.Header) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	m := nats.NewMsg("$KV." + bucket + "." + key)
	m.Data = val
	for k, v := range hdr {
		m.Header[k] = v
	}
	if purge {
		m.Header.Set("KV-Operation", "PURGE")
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	}
	opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(rev)}
	if ttl > 0 {
		opts = append(opts, jetstream.WithMsgTTL(ttl))
	}
	ack, err := js.PublishMsg(ctx, m, opts...)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

func (g *registrar) change(rev uint64, op, reason string, rec *events.Record) *events.Change {
	el := rec.Element()
	return &events.Change{Scope: g.scope, Pool: rec.Pool, Revision: rev, Op: op, PEID: rec.PEID, Reason: reason, Element: &el}
}

// sameElement tells whether a re-registration changed nothing that
// resolution shows.
func sameElement(a, b *events.Record) bool {
	return a.Policy == b.Policy && a.LifetimeMS == b.LifetimeMS &&
		slices.Equal(a.Transports, b.Transports) && maps.Equal(a.Meta, b.Meta)
}

// errWaitEarlier leaves an event for redelivery (after a second) until
// the events stored before it are applied; it is no fault of the store.
var errWaitEarlier = errors.New("an earlier event may still be waiting: delivered again later")

// errRecheck sends an event decided on the view back to the store: as a
// lost compare-and-set race, retryCAS tries again.
var errRecheck = fmt.Errorf("the view may be behind the store: %w", jetstream.ErrKeyRevisionMismatch)

// isCASConflict tells a lost compare-and-set race from other errors.
func isCASConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// retryCAS runs apply again, with backoff, while it loses compare-and-set
// races against another replica; other results end it.
func retryCAS[T any](ctx context.Context, apply func() (T, error)) (T, error) {
	b := backoff.WithContext(backoff.WithMaxRetries(newBackoff(5*time.Millisecond, time.Second), 10), ctx)
	var result T
	err := backoff.Retry(func() error {
		var err error
		result, err = apply()
		if err != nil && !isCASConflict(err) {
			return backoff.Permanent(err)
		}
		return err
	}, b)
	if isCASConflict(err) {
		var zero T
		return zero, reject(events.CodeUnavailable, "the record kept changing under concurrent writes; try again")
	}
	return result, err
}

// removeIf takes the PE of key out of the name space with reason, if its
// current record satisfies cond: a purge with compare-and-set on the
// revision read, retried when the record changed under it (cond is then
// asked again). It publishes the remove change (once this replica's view
// no longer resolves the PE) and logs it; nil when there was nothing to
// remove.
func (g *registrar) removeIf(ctx context.Context, key, reason string, cond func(*events.Record) bool, logArgs ...any) (*events.Change, error) {
	change, err := retryCAS(ctx, func() (*events.Change, error) {
		e, err := g.current(ctx, key)
		old := e.rec
		if err != nil || old == nil || !cond(old) {
			return nil, err
		}
		newRev, err := writeKV(ctx, g.js, g.kv.Bucket(), key, g.tombstone(old, reason), e.rev, 0, true, nats.Header{events.HeaderReason: {reason}})
		if err != nil {
			return nil, err
		}
		return g.change(newRev, events.OpRemove, reason, old), nil
	})
	if err != nil || change == nil {
		return nil, err
	}
	g.view.waitFor(change.Revision, viewWait)
	g.log.InfoContext(ctx, "PE removed", append([]any{"pool", change.Pool, "pe_id", change.PEID, "reason", reason, "revision", change.Revision}, logArgs...)...)
	return change, publishChange(g.nc, g.metrics, change)
}

func newBackoff(initial, maxInterval time.Duration) *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = initial
	b.MaxInterval = maxInterval
	b.MaxElapsedTime = 0
	b.Reset() // start at initial, not at the default's 500 ms
	return b
}
