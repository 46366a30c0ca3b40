package events

import (
	"encoding/json"
	"errors"
	"net"
	"time"
)

// Limits of the protocol's defaults table.
const (
	DefaultLifetime  = 5 * time.Second
	DefaultClockSkew = 30 * time.Second
	DefaultMax       = 3
	MaxMax           = 128
	MaxTransports    = 16
	MaxLifetime      = 24 * time.Hour
	// MaxSeq is the largest seq: 2^53 - 1, the largest integer every JSON
	// reader (JavaScript's numbers) holds exactly. Wall-clock microseconds,
	// the seqs rspclient sends, stay below it until the year 2255.
	MaxSeq = 1<<53 - 1
	// MaxWeight and MaxPriority bound the policy parameters (RFC 5356
	// carries them in 32 bits): a weighted policy's sums over a pool then
	// stay exact in 64-bit integers and in float64.
	MaxWeight   = 1<<32 - 1
	MaxPriority = 1<<32 - 1
	// Size limits of a registration, so that an answer of MaxMax elements
	// always fits in a NATS message (1 MiB by default): at most
	// MaxMetaKeys meta entries, keys of 1 to MaxMetaKey bytes, values of
	// at most MaxMetaValue bytes, addresses and subjects of at most
	// MaxAddr bytes, and the element (pe_id, transports, policy, meta as
	// JSON) at most MaxElementBytes: 128 × 6 KiB = 768 KiB.
	MaxMetaKeys     = 16
	MaxMetaKey      = 64
	MaxMetaValue    = 256
	MaxAddr         = 256
	MaxElementBytes = 6 << 10
)

// Decode unmarshals a JSON body into v; a type error names its field.
func Decode(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Errf(te.Field, "must be a JSON %s, got %s", te.Type.Kind(), te.Value)
		}
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return Errf("body", "is not valid JSON: %v", err)
		}
		if field := badTimeField(body); field != "" {
			return Errf(field, "must be an RFC 3339 time string: %v", err)
		}
		return Errf("body", "%v", err)
	}
	return nil
}

// timeFields are the time-valued fields of the wire messages.
var timeFields = []string{"time", "registered_at", "updated_at", "removed_at"}

// badTimeField finds the time field that does not decode, since the json
// package does not name it.
func badTimeField(body []byte) string {
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil {
		return ""
	}
	for _, f := range timeFields {
		var t time.Time
		if raw, ok := obj[f]; ok && json.Unmarshal(raw, &t) != nil {
			return f
		}
	}
	return ""
}

func checkSeqTime(seq uint64, t, now time.Time, skew time.Duration) error {
	if seq == 0 || seq > MaxSeq {
		return Errf("seq", "%d is not an integer in 1..%d", seq, uint64(MaxSeq))
	}
	if t.IsZero() {
		return Errf("time", "is required (RFC 3339)")
	}
	if d := t.Sub(now); d > skew || d < -skew {
		return Errf("time", "%s is more than %s away from the name server's clock", t.Format(time.RFC3339Nano), skew)
	}
	return nil
}

var protos = map[string]bool{"tcp": true, "udp": true, "sctp": true, "http": true, "nats": true}

// Lifetime is the registration lifetime: lifetime_ms rounded up to whole
// seconds, at least 1 s, DefaultLifetime when absent.
func (r *Registration) Lifetime() time.Duration {
	if r.LifetimeMS == 0 {
		return DefaultLifetime
	}
	s := (min(r.LifetimeMS, MaxLifetime.Milliseconds()) + 999) / 1000
	return time.Duration(max(s, 1)) * time.Second
}

// Validate checks a registration body against the protocol's rules, given
// the receiver's clock and the allowed clock skew.
func (r *Registration) Validate(now time.Time, skew time.Duration) error {
	if err := CheckPEID(r.PEID); err != nil {
		return err
	}
	if err := checkSeqTime(r.Seq, r.Time, now, skew); err != nil {
		return err
	}
	if r.LifetimeMS < 0 || r.LifetimeMS > MaxLifetime.Milliseconds() {
		return Errf("lifetime_ms", "must be in 0..%d (0 means the default)", MaxLifetime.Milliseconds())
	}
	if len(r.Transports) == 0 || len(r.Transports) > MaxTransports {
		return Errf("transports", "must list 1 to %d transports", MaxTransports)
	}
	for i, t := range r.Transports {
		if err := t.validate(); err != nil {
			var fe *FieldError
			errors.As(err, &fe)
			return Errf("transports["+itoa(i)+"]."+fe.Field, "%s", fe.Rule)
		}
	}
	if err := r.Policy.Validate(); err != nil {
		return err
	}
	if err := checkMeta(r.Meta); err != nil {
		return err
	}
	el := Element{PEID: r.PEID, Transports: r.Transports, Policy: r.Policy, Meta: r.Meta}
	if n := len(Marshal(el)); n > MaxElementBytes {
		return Errf("registration", "its element (pe_id, transports, policy, meta) is %d bytes of JSON, more than %d: an answer of %d elements must fit in a NATS message", n, MaxElementBytes, MaxMax)
	}
	return r.Conn.validate()
}

// checkMeta checks the meta entries of a registration against the size
// limits.
func checkMeta(meta map[string]string) error {
	if len(meta) > MaxMetaKeys {
		return Errf("meta", "has %d keys, more than %d", len(meta), MaxMetaKeys)
	}
	for k, v := range meta {
		switch {
		case k == "" || len(k) > MaxMetaKey:
			return Errf("meta", "key %.70q is not 1 to %d bytes", k, MaxMetaKey)
		case len(v) > MaxMetaValue:
			return Errf("meta."+k, "is %d bytes, more than %d", len(v), MaxMetaValue)
		}
	}
	return nil
}

func (c *Conn) validate() error {
	switch {
	case c == nil:
		return nil
	case c.Server == "":
		return Errf("conn.server", "is required (the id of the NATS server the PE is connected to)")
	case c.CID == 0 || c.CID > MaxSeq:
		return Errf("conn.cid", "%d is not an integer in 1..%d (the client id the NATS server gave the connection)", c.CID, uint64(MaxSeq))
	}
	return nil
}

func (t Transport) validate() error {
	if !protos[t.Proto] {
		return Errf("proto", "%q is not one of tcp, udp, sctp, http, nats", t.Proto)
	}
	if len(t.Addr) > MaxAddr {
		return Errf("addr", "is %d bytes, more than %d", len(t.Addr), MaxAddr)
	}
	if len(t.Subject) > MaxAddr {
		return Errf("subject", "is %d bytes, more than %d", len(t.Subject), MaxAddr)
	}
	switch t.Proto {
	case "nats":
		if t.Subject == "" {
			return Errf("subject", "is required for a nats transport")
		}
	case "http":
		if t.Addr == "" {
			return Errf("addr", "is required")
		}
	default:
		if _, _, err := net.SplitHostPort(t.Addr); err != nil {
			return Errf("addr", "%q is not HOST:PORT", t.Addr)
		}
	}
	return nil
}

// Validate checks the policy parameters against the protocol's bounds,
// whatever the policy uses.
func (p PolicyParams) Validate() error {
	if p.Name == "" {
		return Errf("policy.name", "is required")
	}
	if p.Weight < 0 || p.Weight > MaxWeight {
		return Errf("policy.weight", "%d is not in 1..%d (or absent)", p.Weight, MaxWeight)
	}
	if p.Priority < 0 || p.Priority > MaxPriority {
		return Errf("policy.priority", "%d is not in 0..%d", p.Priority, MaxPriority)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"policy.load", p.Load}, {"policy.degradation", p.Degradation}, {"policy.load_increment", p.LoadIncrement}} {
		if !(f.v >= 0 && f.v <= 1) { // also refuses NaN
			return Errf(f.name, "%g is not a fraction in [0, 1]", f.v)
		}
	}
	return nil
}

// Validate checks a deregistration body.
func (d *Deregistration) Validate(now time.Time, skew time.Duration) error {
	if err := CheckPEID(d.PEID); err != nil {
		return err
	}
	return checkSeqTime(d.Seq, d.Time, now, skew)
}

// Validate checks a failure report body.
func (f *FailureReport) Validate(now time.Time, skew time.Duration) error {
	if err := CheckPEID(f.PEID); err != nil {
		return err
	}
	if f.Time.IsZero() {
		return Errf("time", "is required (RFC 3339)")
	}
	if d := f.Time.Sub(now); d > skew || d < -skew {
		return Errf("time", "is more than %s away from the name server's clock", skew)
	}
	return nil
}

// Validate checks a resolution request and fills in the default max.
func (q *ResolveRequest) Validate() error {
	switch {
	case q.Max == 0:
		q.Max = DefaultMax
	case q.Max < 0 || q.Max > MaxMax:
		return Errf("max", "%d is not in 1..%d", q.Max, MaxMax)
	}
	for i, id := range q.Exclude {
		if err := CheckPEID(id); err != nil {
			return Errf("exclude["+itoa(i)+"]", "%q does not match the pe_id rule", id)
		}
	}
	if q.Affinity != "" {
		if err := CheckPEID(q.Affinity); err != nil {
			return Errf("affinity", "%q does not match the pe_id rule", q.Affinity)
		}
	}
	return nil
}

func itoa(i int) string { return string(Marshal(i)) }

// Validate checks a read request and fills in the default limit.
func (q *ReadRequest) Validate() error {
	switch {
	case q.Limit == 0:
		q.Limit = ReadPageMax
	case q.Limit < 0 || q.Limit > ReadPageMax:
		return Errf("limit", "%d is not in 1..%d", q.Limit, ReadPageMax)
	}
	if q.After != "" {
		if err := CheckPEID(q.After); err != nil {
			return Errf("after", "%q does not match the pe_id rule", q.After)
		}
	}
	return nil
}
