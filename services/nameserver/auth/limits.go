package auth

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/jwt/v2"

	"github.com/rserpool/rsp/events"
)

// AccountLimits are the limits a scope account's JWT carries, which the
// NATS servers enforce for every user of the scope together: a credential
// cannot make the scope unusable for the others by sheer numbers. The
// defaults are far above what an installation uses: rsp's own clients
// create no streams or consumers at all (only the name servers do, a few
// each), and a PE or PU holds one connection and a handful of
// subscriptions. JetStream storage is not limited: RSP_EVENTS keeps 24 h
// of events, renewals included, and a full account would refuse every
// renewal (see the notes of issue 16).
type AccountLimits struct {
	Connections   int64 // client connections at once
	Subscriptions int64 // subscriptions at once, all connections together
	Payload       int64 // bytes per message
	Streams       int64 // JetStream streams
	Consumers     int64 // JetStream consumers
}

// DefaultAccountLimits are the limits of a scope account unless set.
func DefaultAccountLimits() AccountLimits {
	return AccountLimits{Connections: 50_000, Subscriptions: 1_000_000, Payload: 1 << 20, Streams: 64, Consumers: 4096}
}

// ParseAccountLimits reads "name=N,..." (names connections, subscriptions,
// payload, streams, consumers; -1: no limit) over the defaults.
func ParseAccountLimits(s string) (AccountLimits, error) {
	l := DefaultAccountLimits()
	if strings.TrimSpace(s) == "" {
		return l, nil
	}
	for _, kv := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		n, err := strconv.ParseInt(val, 10, 64)
		if !ok || err != nil || n < -1 || n == 0 {
			return l, events.Errf("account-limits", "%q is not NAME=N with N ≥ 1 or -1 (no limit)", kv)
		}
		switch name {
		case "connections":
			l.Connections = n
		case "subscriptions":
			l.Subscriptions = n
		case "payload":
			l.Payload = n
		case "streams":
			l.Streams = n
		case "consumers":
			l.Consumers = n
		default:
			return l, events.Errf("account-limits", "%q is not one of connections, subscriptions, payload, streams, consumers", name)
		}
	}
	return l, nil
}

func (l AccountLimits) String() string {
	return fmt.Sprintf("connections=%d,subscriptions=%d,payload=%d,streams=%d,consumers=%d", l.Connections, l.Subscriptions, l.Payload, l.Streams, l.Consumers)
}

// limitsTag marks an account whose limits rsp set (an account made before
// carries NATS's defaults: unlimited).
const limitsTag = "rsp-limits"

// apply sets l on an account's claims.
func (l AccountLimits) apply(ac *jwt.AccountClaims) {
	if !ac.Tags.Contains(limitsTag) {
		ac.Tags.Add(limitsTag)
	}
	ac.Limits.Conn, ac.Limits.Subs, ac.Limits.Payload = l.Connections, l.Subscriptions, l.Payload
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{
		MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit, Streams: l.Streams, Consumer: l.Consumers,
	}
}

// limitsOf reads the limits an account's claims carry; ok is false for
// an account whose limits rsp never set.
func limitsOf(ac *jwt.AccountClaims) (AccountLimits, bool) {
	l := AccountLimits{Connections: ac.Limits.Conn, Subscriptions: ac.Limits.Subs, Payload: ac.Limits.Payload,
		Streams: ac.Limits.JetStreamLimits.Streams, Consumers: ac.Limits.JetStreamLimits.Consumer}
	return l, ac.Tags.Contains(limitsTag)
}
