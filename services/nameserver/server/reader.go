package server

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rserpool/rsp/events"
)

// Reads. Pool users read the name space through the name servers, never
// through the bucket: rsp.<scope>.read.<pool> answers a page of a pool's
// records (and the removals after a revision), rsp.<scope>.pools lists the
// pools. So a pu or pe credential needs no JetStream API at all, and one
// limited to pool A can read nothing of pool B: its permissions name the
// subjects of its pools only. Answers are signed as resolution answers
// are.

// mark is the purge marker of a removed PE, as the view saw it: its
// revision, and its reason once a read looked it up ("" before).
type mark struct {
	rev    uint64
	reason string
}

// mark records the purge marker of pool/id at revision rev. The caller
// holds v.mu.
func (v *view) mark(pool, id string, rev uint64) {
	if rev == 0 { // a re-sync dropped it: no marker known
		return
	}
	ms := v.marks[pool]
	if ms == nil {
		ms = map[string]*mark{}
		v.marks[pool] = ms
	}
	ms[id] = &mark{rev: rev}
}

// unmark forgets the marker of pool/id (it registered again). The caller
// holds v.mu.
func (v *view) unmark(pool, id string) {
	if ms := v.marks[pool]; ms != nil {
		delete(ms, id)
		if len(ms) == 0 {
			delete(v.marks, pool)
		}
	}
}

// unknownReason is a removal of a read answer whose reason is yet to be
// looked up: its index in ReadAnswer.Removed and its marker.
type unknownReason struct {
	i int
	m *mark
}

// readPage answers one page of pool (q validated), with the removals
// whose reason is yet to be looked up.
func (v *view) readPage(poolName string, q *events.ReadRequest) (events.ReadAnswer, []unknownReason) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	a := events.ReadAnswer{Scope: v.scope, Pool: poolName, Revision: v.revision}
	if p := v.pools[poolName]; p != nil {
		i := 0
		if q.After != "" {
			i, _ = slices.BinarySearchFunc(p.members, q.After, func(m *member, id string) int { return cmpString(m.rec.PEID, id) })
			if i < len(p.members) && p.members[i].rec.PEID == q.After {
				i++
			}
		}
		size := 0
		for ; i < len(p.members); i++ {
			m := p.members[i]
			if len(a.Records) == q.Limit || (len(a.Records) > 0 && size+len(m.elem)*2 > events.ReadPageBytes) {
				a.Next = a.Records[len(a.Records)-1].Record.PEID
				break
			}
			size += len(m.elem)*2 + 256 // the element, its record around it
			a.Records = append(a.Records, events.ReadRecord{Revision: m.rev, Added: m.added, Record: m.rec})
		}
	}
	if q.After != "" || q.RemovedAfter == 0 {
		return a, nil
	}
	type removal struct {
		id string
		m  *mark
	}
	var removed []removal
	for id, m := range v.marks[poolName] {
		if m.rev > q.RemovedAfter {
			removed = append(removed, removal{id, m})
		}
	}
	// The newest ReadPageMax: a reader that missed more takes the rest as
	// expired (it finds them gone).
	slices.SortFunc(removed, func(a, b removal) int { return cmp.Compare(b.m.rev, a.m.rev) })
	removed = removed[:min(len(removed), events.ReadPageMax)]
	slices.SortFunc(removed, func(a, b removal) int { return cmpString(a.id, b.id) })
	var unknown []unknownReason
	for i, r := range removed {
		a.Removed = append(a.Removed, events.Removal{PEID: r.id, Revision: r.m.rev, Reason: r.m.reason})
		if r.m.reason == "" {
			unknown = append(unknown, unknownReason{i, r.m})
		}
	}
	return a, unknown
}

// reader answers reads of one scope from its view.
type reader struct {
	view *view
	// kvStream is the bucket's stream (registrar.kvStream: looked up once).
	kvStream func(context.Context) (jetstream.Stream, error)
	key      *events.Signer
	jwt      string // sent in Rsp-Jwt; "" without
	log      *slog.Logger
}

// readTimeout bounds the lookups of one answer (marker reasons);
// readWait the wait for a revision another replica showed the reader
// (well within the client's attempt, a second).
const (
	readTimeout = time.Second
	readWait    = 300 * time.Millisecond
)

func (rd *reader) handleRead(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	rd.respond(msg, events.Marshal(rd.read(msg)))
}

func (rd *reader) read(msg *nats.Msg) events.ReadAnswer {
	// rsp.<scope>.read.<pool>: the pool is the last token.
	pool := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
	bad := func(err error) events.ReadAnswer {
		return events.ReadAnswer{Error: &events.Error{Code: events.CodeBadRequest, Message: err.Error()}}
	}
	if err := events.CheckPool(pool); err != nil {
		return bad(err)
	}
	var q events.ReadRequest
	if len(msg.Data) > 0 {
		if err := events.Decode(msg.Data, &q); err != nil {
			return bad(err)
		}
	}
	if err := q.Validate(); err != nil {
		return bad(err)
	}
	if q.After == "" && q.RemovedAfter > 0 {
		// A reader resuming after a revision another replica showed it.
		rd.view.waitFor(q.RemovedAfter, readWait)
	}
	a, unknown := rd.view.readPage(pool, &q)
	if len(unknown) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		defer cancel()
		if err := rd.reasons(ctx, a.Removed, unknown); err != nil {
			rd.log.Warn("read: removal reasons not found", "pool", pool, "err", err)
			return events.ReadAnswer{Error: &events.Error{Code: events.CodeUnavailable, Message: "reading removal reasons: " + err.Error()}}
		}
	}
	return a
}

// reasons looks up the reason of each unknown removal in the bucket's
// stream (a watch shows no headers), fills it in and keeps it in the
// view.
func (rd *reader) reasons(ctx context.Context, removed []events.Removal, unknown []unknownReason) error {
	st, err := rd.kvStream(ctx)
	if err != nil {
		return err
	}
	for _, u := range unknown {
		msg, err := st.GetMsg(ctx, u.m.rev)
		reason := ""
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			reason = events.ReasonExpired // its marker just went (older versions)
		case err != nil:
			return err
		default:
			reason = events.RemovalReason(msg.Header)
		}
		removed[u.i].Reason = reason
		rd.view.mu.Lock()
		u.m.reason = reason
		rd.view.mu.Unlock()
	}
	return nil
}

func (rd *reader) handlePools(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	rd.view.mu.RLock()
	rev := rd.view.revision
	rd.view.mu.RUnlock()
	a := events.PoolsAnswer{Scope: rd.view.scope, Revision: rev}
	for _, s := range rd.view.summaries() {
		a.Pools = append(a.Pools, events.PoolInfo{Pool: s.Pool, Policy: s.Policy, Size: s.Size, Revision: s.Revision})
	}
	rd.respond(msg, events.Marshal(a))
}

// respond sends data signed as an answer to msg (Signatures in
// docs/protocol.md).
func (rd *reader) respond(msg *nats.Msg, data []byte) {
	nonce := ""
	if msg.Header != nil {
		nonce = msg.Header.Get(events.HeaderNonce)
	}
	reply := &nats.Msg{Data: data, Header: nats.Header{}}
	if err := events.SignAnswer(reply.Header, rd.key, msg.Subject, nonce, data); err != nil {
		rd.log.Warn("answer not signed", "subject", msg.Subject, "err", err)
		return
	}
	if rd.jwt != "" {
		reply.Header.Set(events.HeaderJWT, rd.jwt)
	}
	if err := msg.RespondMsg(reply); err != nil {
		rd.log.Warn("answer not sent", "subject", msg.Subject, "err", err)
	}
}
