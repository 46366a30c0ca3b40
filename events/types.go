package events

import (
	"encoding/json"
	"time"
)

// Transport is one way to reach a PE. "nats" transports carry Subject, all
// others Addr.
type Transport struct {
	Proto   string `json:"proto"`
	Addr    string `json:"addr,omitempty"`
	Subject string `json:"subject,omitempty"`
}

// PolicyParams are the pool policy and this PE's parameters for it.
type PolicyParams struct {
	Name          string  `json:"name"`
	Weight        int     `json:"weight,omitempty"`
	Priority      int     `json:"priority,omitempty"`
	Load          float64 `json:"load,omitempty"`
	Degradation   float64 `json:"degradation,omitempty"`
	LoadIncrement float64 `json:"load_increment,omitempty"`
}

// Conn names the NATS connection a PE registered over (rsp extension): the
// server's id and the client id the server gave the connection. When that
// connection closes, the name server takes the PE out at once (reason
// "disconnected") unless it registers again over a new one within the
// grace period.
type Conn struct {
	Server string `json:"server"`
	CID    uint64 `json:"cid"`
}

// Reports is the value of a key <pool>.<pe_id> of the bucket
// rsp_<scope>_reports (rsp extension): when each reporter (the signer's
// user nkey) last reported the PE within the scope's report window.
type Reports map[string]time.Time

// Registration is the body of a register event.
type Registration struct {
	PEID       string            `json:"pe_id"`
	Seq        uint64            `json:"seq"`
	Time       time.Time         `json:"time"`
	LifetimeMS int64             `json:"lifetime_ms,omitempty"`
	Transports []Transport       `json:"transports"`
	Policy     PolicyParams      `json:"policy"`
	Meta       map[string]string `json:"meta,omitempty"`
	Conn       *Conn             `json:"conn,omitempty"`
}

// Deregistration is the body of a deregister event.
type Deregistration struct {
	PEID string    `json:"pe_id"`
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
}

// FailureReport is the body of a failure event; its signer is the reporter.
type FailureReport struct {
	PEID   string    `json:"pe_id"`
	Time   time.Time `json:"time"`
	Reason string    `json:"reason,omitempty"`
}

// Error codes of outcomes and answers.
const (
	CodeBadRequest  = "bad_request"
	CodeForbidden   = "forbidden"
	CodeConflict    = "conflict"
	CodeStale       = "stale"
	CodeUnavailable = "unavailable"
	CodeNotFound    = "not_found"
)

// Error is the error object of outcomes and answers. It is also a Go error.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Outcome is what the name server says about a register/deregister event.
type Outcome struct {
	PEID     string `json:"pe_id"`
	Seq      uint64 `json:"seq"`
	Accepted bool   `json:"accepted"`
	Error    *Error `json:"error,omitempty"`
}

// Record is a PE as the name space (the key-value bucket) holds it.
type Record struct {
	PEID         string            `json:"pe_id"`
	Pool         string            `json:"pool"`
	LifetimeMS   int64             `json:"lifetime_ms"`
	Transports   []Transport       `json:"transports"`
	Policy       PolicyParams      `json:"policy"`
	Meta         map[string]string `json:"meta,omitempty"`
	Signer       string            `json:"signer"`
	RegisteredAt time.Time         `json:"registered_at"`
	UpdatedAt    time.Time         `json:"updated_at"`
	LastSeq      uint64            `json:"last_seq"`
	Home         string            `json:"home_nameserver"`
	Conn         *Conn             `json:"conn,omitempty"`
}

// Tombstone is the body of the purge marker that removes a PE from a
// scope's bucket (rsp extension): who owned the PE id and the last seq
// applied to it. While the marker lives (TombstoneLife), a registration of
// the PE id by another signer is refused forbidden and one of its owner
// must carry a higher seq, so that no replayed event, under any message
// id, brings the PE back or undoes a later event.
type Tombstone struct {
	PEID      string    `json:"pe_id"`
	Pool      string    `json:"pool"`
	Signer    string    `json:"signer"`
	LastSeq   uint64    `json:"last_seq"`
	Reason    string    `json:"reason"`
	RemovedAt time.Time `json:"removed_at"`
}

// TombstoneLife is how long a removal's purge marker must stay, for the
// clock skew a name server allows: an event's time may be up to skew
// away from when the stream stored it, so a copy of an event accepted
// before the removal can be accepted again at most 2 × skew after it; a
// minute more covers clocks that disagree (the name server's, which
// stamps the removal, and the NATS servers').
func TombstoneLife(skew time.Duration) time.Duration { return 2*skew + time.Minute }

// Element is a PE as resolution answers and changes show it.
type Element struct {
	PEID       string            `json:"pe_id"`
	Transports []Transport       `json:"transports"`
	Policy     PolicyParams      `json:"policy"`
	Meta       map[string]string `json:"meta,omitempty"`
}

// Element returns the public part of a record.
func (r *Record) Element() Element {
	return Element{PEID: r.PEID, Transports: r.Transports, Policy: r.Policy, Meta: r.Meta}
}

// ResolveRequest is the optional body of a resolution request.
type ResolveRequest struct {
	Max      int               `json:"max,omitempty"`
	Exclude  []string          `json:"exclude,omitempty"`
	Affinity string            `json:"affinity,omitempty"`
	Hint     map[string]string `json:"hint,omitempty"`
}

// ResolveAnswer is the answer to a resolution request: either the elements
// or Error.
type ResolveAnswer struct {
	Scope    string    `json:"scope,omitempty"`
	Pool     string    `json:"pool,omitempty"`
	Policy   string    `json:"policy,omitempty"`
	Revision uint64    `json:"revision,omitempty"`
	Elements []Element `json:"elements,omitempty"`
	Error    *Error    `json:"error,omitempty"`
}

// ReadPageMax is the most records a read answer holds (ReadRequest.Limit's
// default and ceiling); a name server also ends a page early when its body
// reaches ReadPageBytes, so that every page fits in a NATS message.
const (
	ReadPageMax   = 500
	ReadPageBytes = 512 << 10
)

// ReadRequest is the optional body of a read of a pool's records
// (rsp.<scope>.read.<pool>, rsp extension): one page, the records sorted
// by PE id.
type ReadRequest struct {
	// After is the PE id the previous page ended with (its Next); ""
	// starts at the first.
	After string `json:"after,omitempty"`
	// Limit is the most records wanted, 1 to ReadPageMax (0: ReadPageMax).
	Limit int `json:"limit,omitempty"`
	// RemovedAfter asks, on the first page (After ""), for the removals of
	// the pool whose revision is above it (0: none).
	RemovedAfter uint64 `json:"removed_after,omitempty"`
}

// ReadAnswer is a page of a pool's records, or Error.
type ReadAnswer struct {
	Scope string `json:"scope,omitempty"`
	Pool  string `json:"pool,omitempty"`
	// Revision is the answering name server's view revision when it read
	// the page: every change up to it is reflected.
	Revision uint64       `json:"revision,omitempty"`
	Records  []ReadRecord `json:"records,omitempty"`
	Removed  []Removal    `json:"removed,omitempty"`
	// Next is the After of the next page; "" on the last page.
	Next  string `json:"next,omitempty"`
	Error *Error `json:"error,omitempty"`
}

// ReadRecord is a live record of a read and its bucket revision. Added is
// the revision at which the PE joined the pool as the answering name
// server knows it (at most Revision; the revision of its oldest record
// the name server has seen since it started).
type ReadRecord struct {
	Revision uint64 `json:"revision"`
	Added    uint64 `json:"added"`
	Record   Record `json:"record"`
}

// Removal is a PE removed from the pool: the revision of its purge marker
// and the reason the marker gives.
type Removal struct {
	PEID     string `json:"pe_id"`
	Revision uint64 `json:"revision"`
	Reason   string `json:"reason"`
}

// PoolsAnswer lists the pools of a scope (rsp.<scope>.pools), or Error.
type PoolsAnswer struct {
	Scope    string     `json:"scope,omitempty"`
	Revision uint64     `json:"revision,omitempty"`
	Pools    []PoolInfo `json:"pools,omitempty"`
	Error    *Error     `json:"error,omitempty"`
}

// PoolInfo is one pool of a PoolsAnswer.
type PoolInfo struct {
	Pool     string `json:"pool"`
	Policy   string `json:"policy"`
	Size     int    `json:"size"`
	Revision uint64 `json:"revision"`
}

// Change ops and reasons.
const (
	OpAdd    = "add"
	OpUpdate = "update"
	OpRemove = "remove"

	ReasonRegistered   = "registered"
	ReasonUpdated      = "updated"
	ReasonDeregistered = "deregistered"
	ReasonExpired      = "expired"
	ReasonFailed       = "failed"
	ReasonDisconnected = "disconnected"
)

// NameServerBeat is what a name-server replica publishes every second on
// NameServerSubject (rsp extension), and once more when it stops: that it
// lives, and its counts, so that monitors see every replica of a scope and
// the resolutions of all of them.
type NameServerBeat struct {
	ID        string    `json:"id"`
	Scope     string    `json:"scope"`
	Time      time.Time `json:"time"`
	StartedAt time.Time `json:"started_at"`
	// Key is the nkey that signs the replica's answers.
	Key   string `json:"key"`
	Pools int    `json:"pools"`
	PEs   int    `json:"pes"`
	// Resolutions counts, per pool, the answers with PEs this replica sent
	// since the pool last appeared in its view (a counter: rates come
	// from two beats).
	Resolutions map[string]uint64 `json:"resolutions"`
	// Stopping is set on the last beat of a replica that stops.
	Stopping bool `json:"stopping,omitempty"`
}

// Change is a pool change notification. Element is the PE after an add or
// update and the last known PE on a remove (absent when the name server no
// longer knew it).
type Change struct {
	Scope    string   `json:"scope"`
	Pool     string   `json:"pool"`
	Revision uint64   `json:"revision"`
	Op       string   `json:"op"`
	PEID     string   `json:"pe_id"`
	Reason   string   `json:"reason"`
	Element  *Element `json:"element,omitempty"`
}

// Marshal is json.Marshal for bodies that cannot fail to encode.
func Marshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("events: " + err.Error())
	}
	return b
}
