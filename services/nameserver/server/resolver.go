package server

import (
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/rserpool/rsp/events"
)

// resolver answers resolution requests of one scope from its view.
type resolver struct {
	view *view
	key  *events.Signer
	jwt  string // the replica's user JWT, sent in Rsp-Jwt; "" without
	log  *slog.Logger
}

func (r *resolver) handle(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	body, errAnswer := r.answer(msg)
	data := body
	if errAnswer != nil {
		data = events.Marshal(events.ResolveAnswer{Error: errAnswer})
	}
	nonce := ""
	if msg.Header != nil {
		nonce = msg.Header.Get(events.HeaderNonce)
	}
	reply := &nats.Msg{Subject: msg.Reply, Data: data, Header: nats.Header{}}
	if err := events.SignAnswer(reply.Header, r.key, msg.Subject, nonce, data); err != nil {
		r.log.Error("signing an answer failed", "err", err)
		return
	}
	if r.jwt != "" {
		reply.Header.Set(events.HeaderJWT, r.jwt)
	}
	if err := msg.RespondMsg(reply); err != nil {
		r.log.Warn("answer not sent", "subject", msg.Subject, "err", err)
	}
}

// answer returns the JSON answer for msg, or the error to answer with.
func (r *resolver) answer(msg *nats.Msg) ([]byte, *events.Error) {
	// rsp.<scope>.resolve.<pool>: the pool is the last token.
	pool := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
	if err := events.CheckPool(pool); err != nil {
		return nil, &events.Error{Code: events.CodeBadRequest, Message: err.Error()}
	}
	var q events.ResolveRequest
	if len(msg.Data) > 0 {
		if err := events.Decode(msg.Data, &q); err != nil {
			return nil, &events.Error{Code: events.CodeBadRequest, Message: err.Error()}
		}
	}
	if err := q.Validate(); err != nil {
		return nil, &events.Error{Code: events.CodeBadRequest, Message: err.Error()}
	}
	b, e := r.view.resolve(pool, &q)
	if e != nil {
		return nil, e
	}
	// The answer is copied out because the buffer goes back to the pool.
	out := append([]byte(nil), b.Bytes()...)
	answerBufs.Put(b)
	return out, nil
}
