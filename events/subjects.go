package events

import (
	"strings"
)

// Kind is the verb in an rsp subject: rsp.<scope>.<kind>.<pool>[...].
type Kind string

const (
	KindRegister   Kind = "register"
	KindDeregister Kind = "deregister"
	KindFailure    Kind = "failure"
	KindOutcome    Kind = "outcome"
	KindResolve    Kind = "resolve"
	KindChanges    Kind = "changes"
	// KindRead asks a name server for a pool's records (rsp extension).
	KindRead Kind = "read"
)

// Fixed names of the protocol.
const (
	StreamName = "RSP_EVENTS"      // JetStream stream holding all events
	QueueGroup = "rsp-nameservers" // resolution queue group
)

// Subject returns rsp.<scope>.<kind>.<pool>.
func Subject(scope string, kind Kind, pool string) string {
	return "rsp." + scope + "." + string(kind) + "." + pool
}

// PoolsSubject is where a name server lists the pools of scope (rsp
// extension): rsp.<scope>.pools.
func PoolsSubject(scope string) string { return "rsp." + scope + ".pools" }

// InboxPrefix is the inbox prefix of the user with public nkey userPub
// (U...): its replies and PubAcks come to InboxPrefix(userPub)+".>", and a
// pe or pu user may subscribe there only, so nobody reads another's
// answers (rsp extension; see docs/protocol.md, Connecting).
func InboxPrefix(userPub string) string { return "_INBOX." + userPub }

// OutcomeSubject returns rsp.<scope>.outcome.<pool>.<pe_id>.
func OutcomeSubject(scope, pool, peID string) string {
	return Subject(scope, KindOutcome, pool) + "." + peID
}

// NameServerSubject is where name-server replica id announces itself in
// scope every second (rsp extension): rsp.<scope>.nameservers.<id> (id as
// one subject token). NameServersSubject is the wildcard of all of them.
func NameServerSubject(scope, id string) string { return "rsp." + scope + ".nameservers." + id }

// NameServersSubject is rsp.<scope>.nameservers.*.
func NameServersSubject(scope string) string { return NameServerSubject(scope, "*") }

// ServiceSubject is the conventional subject of a PE's "nats" transport
// (rsp extension): rsp.<scope>.svc.<pool>.<pe_id>. PE credentials may
// subscribe to it for their pools, PU credentials may send requests to it.
func ServiceSubject(scope, pool, peID string) string {
	return "rsp." + scope + ".svc." + pool + "." + peID
}

// ServiceSubjects is the wildcard of every PE service subject of pool in
// scope: rsp.<scope>.svc.<pool>.>.
func ServiceSubjects(scope, pool string) string {
	return "rsp." + scope + ".svc." + pool + ".>"
}

// DisconnectExport is the stream the system account exports (rsp
// extension, operator mode): NATS servers publish a client_disconnect
// advisory on $SYS.ACCOUNT.<account>.DISCONNECT when a client connection
// of that account closes. The export puts the account in token 3
// (DisconnectAccountToken), so each account may import its own only.
const (
	DisconnectExport       = "$SYS.ACCOUNT.*.DISCONNECT"
	DisconnectAccountToken = 3
)

// DisconnectSubject is where the disconnect advisories of account (A...)
// appear, in the system account and, through the import every scope
// account has, in the account itself.
func DisconnectSubject(account string) string {
	return "$SYS.ACCOUNT." + account + ".DISCONNECT"
}

// ReportsBucket is the key-value bucket holding the failure reports of
// scope (rsp extension): key <pool>.<pe_id>, value ReportSet.
func ReportsBucket(scope string) string { return "rsp_" + scope + "_reports" }

// EventSubjects are the subjects RSP_EVENTS captures, for all scopes.
func EventSubjects() []string {
	return []string{"rsp.*.register.*", "rsp.*.deregister.*", "rsp.*.failure.*"}
}

// ScopeEventSubjects are the event subjects of one scope (a consumer filter).
func ScopeEventSubjects(scope string) []string {
	return []string{
		Subject(scope, KindRegister, "*"),
		Subject(scope, KindDeregister, "*"),
		Subject(scope, KindFailure, "*"),
	}
}

// Bucket is the key-value bucket holding the name space of scope.
func Bucket(scope string) string { return "rsp_" + scope }

// Key is the bucket key of a PE.
func Key(pool, peID string) string { return pool + "." + peID }

// SplitKey splits a bucket key into pool and PE id.
func SplitKey(key string) (pool, peID string, ok bool) {
	return strings.Cut(key, ".")
}

// ParseSubject splits rsp.<scope>.<kind>.<pool> (and, for outcomes, a
// trailing .<pe_id>) and validates the names in it.
func ParseSubject(subject string) (scope string, kind Kind, pool string, err error) {
	parts := strings.Split(subject, ".")
	if len(parts) < 4 || parts[0] != "rsp" {
		return "", "", "", Errf("subject", "%q is not rsp.<scope>.<kind>.<pool>", subject)
	}
	scope, kind, pool = parts[1], Kind(parts[2]), parts[3]
	if err := CheckScope(scope); err != nil {
		return "", "", "", err
	}
	if err := CheckPool(pool); err != nil {
		return "", "", "", err
	}
	want := 4
	switch kind {
	case KindRegister, KindDeregister, KindFailure, KindResolve, KindChanges:
	case KindOutcome:
		want = 5
	default:
		return "", "", "", Errf("subject", "%q: kind %q is not one of register, deregister, failure, outcome, resolve, changes", subject, kind)
	}
	if len(parts) != want {
		return "", "", "", Errf("subject", "%q has %d tokens, want %d", subject, len(parts), want)
	}
	if kind == KindOutcome {
		if err := CheckPEID(parts[4]); err != nil {
			return "", "", "", err
		}
	}
	return scope, kind, pool, nil
}
