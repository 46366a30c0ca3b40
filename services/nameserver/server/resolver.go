package server

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rserpool/rsp/events"
)

// resolver answers resolution requests of one scope from its view.
type resolver struct {
	view *view
	key  *events.Signer
	jwt  string // the replica's user JWT, sent in Rsp-Jwt; "" without
	log  *slog.Logger

	took   prometheus.Observer    // seconds per answer
	errors *prometheus.CounterVec // answers with an error, by code

	// states holds *answerState: what one answer needs, reused so that a
	// resolution allocates next to nothing besides the request decoding.
	states sync.Pool
}

// answerState is the scratch space of one answer: the body, the picks,
// the signature and the reply with its header map, built once.
type answerState struct {
	q      events.ResolveRequest
	picks  [events.MaxMax + 1]int
	body   bytes.Buffer
	sig    []byte
	sigVal [1]string // the Rsp-Signature value, in reply.Header
	reply  nats.Msg
}

// maxPooledAnswer bounds the answer buffers kept for reuse.
const maxPooledAnswer = 64 << 10

func (r *resolver) state() *answerState {
	if st, ok := r.states.Get().(*answerState); ok {
		return st
	}
	pub, _ := r.key.PublicKey()
	st := &answerState{sig: make([]byte, 0, 96)}
	st.reply.Header = make(nats.Header, 3)
	st.reply.Header[events.HeaderSigner] = []string{pub}
	st.reply.Header[events.HeaderSignature] = st.sigVal[:]
	if r.jwt != "" {
		st.reply.Header[events.HeaderJWT] = []string{r.jwt}
	}
	return st
}

func (r *resolver) handle(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	start := time.Now()
	st := r.state()
	var data []byte
	if errAnswer := r.answer(msg, st); errAnswer != nil {
		r.errors.WithLabelValues(errAnswer.Code).Inc()
		data = events.Marshal(events.ResolveAnswer{Error: errAnswer})
	} else {
		data = st.body.Bytes() // sent from the buffer: RespondMsg copies it
	}
	nonce := ""
	if msg.Header != nil {
		nonce = msg.Header.Get(events.HeaderNonce)
	}
	st.sig = r.key.AppendAnswerSignature(st.sig[:0], msg.Subject, nonce, data)
	// The header is serialized by RespondMsg before it returns, and st is
	// not reused before then: the value may point into st.sig.
	st.sigVal[0] = unsafe.String(unsafe.SliceData(st.sig), len(st.sig))
	st.reply.Data = data
	if err := msg.RespondMsg(&st.reply); err != nil {
		r.log.Warn("answer not sent", "subject", msg.Subject, "err", err)
	}
	r.took.Observe(time.Since(start).Seconds())
	st.sigVal[0], st.reply.Data, st.reply.Subject = "", nil, ""
	st.q = events.ResolveRequest{}
	if st.body.Cap() <= maxPooledAnswer {
		r.states.Put(st)
	}
}

// answer writes the JSON answer for msg to st.body, or returns the error to
// answer with.
func (r *resolver) answer(msg *nats.Msg, st *answerState) *events.Error {
	// rsp.<scope>.resolve.<pool>: the pool is the last token.
	pool := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
	if !validPool(pool) {
		if err := events.CheckPool(pool); err != nil {
			return &events.Error{Code: events.CodeBadRequest, Message: err.Error()}
		}
	}
	q := &st.q
	if len(msg.Data) > 0 && !decodeMaxOnly(msg.Data, q) {
		if err := events.Decode(msg.Data, q); err != nil {
			return &events.Error{Code: events.CodeBadRequest, Message: err.Error()}
		}
	}
	if err := q.Validate(); err != nil {
		return &events.Error{Code: events.CodeBadRequest, Message: err.Error()}
	}
	return r.view.resolve(pool, q, st.picks[:0], &st.body)
}

// validPool is events.CheckPool's rule ^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$
// without the regular expression; CheckPool has the last word (and the
// message) when it says no.
func validPool(p string) bool {
	if len(p) == 0 || len(p) > 128 {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case (c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// decodeMaxOnly decodes the most common request bodies, {} and
// {"max":N} written exactly so (N: 1 to 3 digits, no leading zero),
// without encoding/json; it reports false, leaving q alone, for any other
// body, which events.Decode then decodes.
func decodeMaxOnly(body []byte, q *events.ResolveRequest) bool {
	if string(body) == "{}" {
		return true
	}
	const pre = `{"max":`
	if len(body) < len(pre)+2 || len(body) > len(pre)+4 || string(body[:len(pre)]) != pre || body[len(body)-1] != '}' {
		return false
	}
	digits := body[len(pre) : len(body)-1]
	if digits[0] == '0' && len(digits) > 1 {
		return false
	}
	n := 0
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + int(c-'0')
	}
	q.Max = n
	return true
}
