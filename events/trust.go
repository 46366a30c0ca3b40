package events

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Tags of the user JWTs rsp issues (package auth): the role of the user and
// the scope it belongs to.
const (
	TagRolePrefix  = "rsp-role:"
	TagScopePrefix = "rsp-scope:"
	RoleNameServer = "nameserver"
	RoleAdmin      = "admin"
	RolePE         = "pe"
	RolePU         = "pu"
)

// Fields named by the errors of the chain checks.
const (
	fieldJWT     = HeaderJWT
	fieldIssuer  = HeaderJWT + ".iss"
	fieldIssAcct = HeaderJWT + ".nats.issuer_account"
	fieldExp     = HeaderJWT + ".exp"
	fieldNbf     = HeaderJWT + ".nbf"
	fieldSub     = HeaderJWT + ".sub"
	fieldPub     = HeaderJWT + ".nats.pub"
	fieldTags    = HeaderJWT + ".nats.tags"
	fieldAccount = "account JWT"
)

// VerifyEventChain checks an event under JWT authorization, in the order of
// docs/protocol.md ("Event authorization"), and returns its signer:
//  1. Rsp-Jwt is present and is a user JWT whose own signature verifies;
//  2. it was issued by acct's key or one of acct's signing keys (on behalf
//     of acct: issuer_account, when set, is acct);
//  3. it is not expired, nor not yet valid, at now;
//  4. acct has not revoked it;
//  5. its subject is Rsp-Signer;
//  6. its publish permissions (those of the scoped signing key's template
//     when the issuer is a scoped key) allow msg.Subject;
//  7. Rsp-Signature verifies (VerifyEvent).
//
// acct is the scope's account JWT, already decoded and trusted by the
// caller. Each failure is a *FieldError naming the header or JWT field and
// the rule it broke.
func VerifyEventChain(msg *nats.Msg, acct *jwt.AccountClaims, now time.Time) (signer string, err error) {
	return (*JWTCache)(nil).VerifyEventChain(msg, acct, now)
}

// JWTCache remembers user JWTs whose own signature verified, so that a
// signer's events cost one JWT decoding instead of one each. Everything
// that depends on time or on the account (issuer, expiry, revocation,
// permissions) is checked at every use. A nil *JWTCache caches nothing. It
// is safe for concurrent use.
type JWTCache struct {
	mu  sync.Mutex
	max int
	m   map[string]*jwt.UserClaims
}

// NewJWTCache returns a cache of at most max user JWTs (≥ 1).
func NewJWTCache(n int) *JWTCache {
	return &JWTCache{max: max(n, 1), m: map[string]*jwt.UserClaims{}}
}

// DecodeUserClaims is jwt.DecodeUserClaims, cached. The claims returned
// are shared: do not change them.
func (c *JWTCache) DecodeUserClaims(token string) (*jwt.UserClaims, error) {
	if c == nil {
		return jwt.DecodeUserClaims(token)
	}
	c.mu.Lock()
	uc, ok := c.m[token]
	c.mu.Unlock()
	if ok {
		return uc, nil
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m) // simple bound: a busy scope refills it at once
	}
	c.m[token] = uc
	c.mu.Unlock()
	return uc, nil
}

// VerifyEventChain is the package's VerifyEventChain, with JWTs decoded
// through c.
func (c *JWTCache) VerifyEventChain(msg *nats.Msg, acct *jwt.AccountClaims, now time.Time) (string, error) {
	if acct == nil {
		return "", Errf(fieldAccount, "is missing: no account to check Rsp-Jwt against")
	}
	if acct.Expires > 0 && now.Unix() > acct.Expires {
		return "", Errf(fieldAccount, "of %s expired at %s", acct.Subject, unix(acct.Expires))
	}
	h := msg.Header // Get works on a nil header
	token := h.Get(HeaderJWT)
	if token == "" {
		return "", Errf(fieldJWT, "header is missing: JWT authorization is on, every event must carry the signer's user JWT")
	}
	uc, err := c.DecodeUserClaims(token)
	if err != nil {
		return "", Errf(fieldJWT, "is not a valid user JWT: %v", err)
	}
	pub, err := checkIssuer(uc, acct)
	if err != nil {
		return "", err
	}
	if err := checkTimes(&uc.ClaimsData, now); err != nil {
		return "", err
	}
	if acct.IsClaimRevoked(uc) {
		return "", Errf(fieldJWT, "user %s is revoked by account %s (JWTs issued at or before %s)",
			uc.Subject, acct.Subject, unix(revokedBefore(acct, uc.Subject)))
	}
	if s := h.Get(HeaderSigner); uc.Subject != s {
		return "", Errf(fieldSub, "%s is not Rsp-Signer %q: the JWT must name the key that signs the event", uc.Subject, s)
	}
	if !pubAllowed(pub, msg.Subject) {
		return "", Errf(fieldPub, "publish permissions of %s do not allow %s (allow %v, deny %v)",
			uc.Subject, msg.Subject, []string(pub.Allow), []string(pub.Deny))
	}
	return VerifyEvent(msg)
}

// checkIssuer checks that acct issued uc and returns the publish
// permissions that apply to uc.
func checkIssuer(uc *jwt.UserClaims, acct *jwt.AccountClaims) (jwt.Permission, error) {
	iss := uc.Issuer
	if uc.IssuerAccount != "" && uc.IssuerAccount != acct.Subject {
		return jwt.Permission{}, Errf(fieldIssAcct, "%s is not this scope's account %s", uc.IssuerAccount, acct.Subject)
	}
	if iss == acct.Subject {
		return uc.Pub, nil
	}
	if !acct.SigningKeys.Contains(iss) {
		return jwt.Permission{}, Errf(fieldIssuer, "%s is neither account %s nor one of its signing keys", iss, acct.Subject)
	}
	if uc.IssuerAccount == "" {
		return jwt.Permission{}, Errf(fieldIssAcct, "is missing: a JWT issued by signing key %s must name account %s", iss, acct.Subject)
	}
	scope, _ := acct.SigningKeys.GetScope(iss)
	if scope == nil {
		return uc.Pub, nil
	}
	// A scoped signing key: its template decides the permissions.
	if err := scope.ValidateScopedSigner(uc); err != nil {
		return jwt.Permission{}, Errf(fieldIssuer, "scoped signing key %s: %v", iss, err)
	}
	us, ok := scope.(*jwt.UserScope)
	if !ok {
		return jwt.Permission{}, Errf(fieldIssuer, "signing key %s has a scope of unknown kind", iss)
	}
	return us.Template.Pub, nil
}

func checkTimes(c *jwt.ClaimsData, now time.Time) error {
	if c.Expires > 0 && now.Unix() > c.Expires {
		return Errf(fieldExp, "JWT of %s expired at %s", c.Subject, unix(c.Expires))
	}
	if c.NotBefore > 0 && now.Unix() < c.NotBefore {
		return Errf(fieldNbf, "JWT of %s is not valid before %s", c.Subject, unix(c.NotBefore))
	}
	return nil
}

func revokedBefore(acct *jwt.AccountClaims, user string) int64 {
	return max(acct.Revocations[user], acct.Revocations[jwt.All])
}

func unix(s int64) string { return time.Unix(s, 0).UTC().Format(time.RFC3339) }

// pubAllowed applies NATS publish permissions to a literal subject: with an
// allow list, some entry must match; no deny entry may match. (jwt's
// Subject.IsContainedIn matches a literal subject against a filter with *
// and > as the server's SubjectMatchesFilter does, without linking the
// server into every client.)
func pubAllowed(p jwt.Permission, subject string) bool {
	match := func(filter string) bool { return jwt.Subject(subject).IsContainedIn(jwt.Subject(filter)) }
	if len(p.Allow) > 0 && !slices.ContainsFunc(p.Allow, match) {
		return false
	}
	return !slices.ContainsFunc(p.Deny, match)
}

// AnswerTrust says whose resolution answers a client accepts.
//
// An answer is trusted when its Rsp-Jwt is a user JWT tagged
// "rsp-role:nameserver" and was issued by Issuer on behalf of Account
// (a client sets both from its own user JWT: only the holder of the
// account's signing key can mint such a JWT) or by one of Keys. A U... key
// in Keys also trusts answers signed by that very name server key, with or
// without a JWT (pinned keys, for servers without JWTs).
type AnswerTrust struct {
	Issuer  string
	Account string
	Keys    []string
}

// TrustFromUserJWT is the default trust of a client holding the user JWT
// token: name servers whose JWTs come from the same signing key of the same
// account.
func TrustFromUserJWT(token string) (AnswerTrust, error) {
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return AnswerTrust{}, Errf("jwt", "is not a valid user JWT: %v", err)
	}
	acct := uc.IssuerAccount
	if acct == "" {
		acct = uc.Issuer // issued by the account key itself
	}
	return AnswerTrust{Issuer: uc.Issuer, Account: acct}, nil
}

// IsZero tells that t trusts nobody.
func (t AnswerTrust) IsZero() bool { return t.Issuer == "" && len(t.Keys) == 0 }

// VerifyAnswerChain checks a resolution answer against trust and returns
// its signer: the answer's Rsp-Jwt is a valid user JWT tagged
// rsp-role:nameserver, unexpired, whose subject is Rsp-Signer and whose
// issuer trust accepts (or Rsp-Signer is a key trust pins); then the
// signature over "<subject>\n<nonce>\n<body>" (VerifyAnswer).
func VerifyAnswerChain(answer *nats.Msg, subject, nonce string, trust AnswerTrust) (signer string, err error) {
	if trust.IsZero() {
		return "", errors.New("answer: no name server is trusted (no JWT of one's own and no name server keys)")
	}
	h := answer.Header
	claimed := h.Get(HeaderSigner)
	if claimed != "" && slices.Contains(trust.Keys, claimed) && nkeys.IsValidPublicUserKey(claimed) {
		return VerifyAnswer(answer, subject, nonce) // a pinned name server key
	}
	token := h.Get(HeaderJWT)
	if token == "" {
		return "", fmt.Errorf("answer: %w", Errf(fieldJWT, "header is missing: the answer does not show a name server's JWT"))
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return "", fmt.Errorf("answer: %w", Errf(fieldJWT, "is not a valid user JWT: %v", err))
	}
	if err := trust.issuerTrusted(uc); err != nil {
		return "", fmt.Errorf("answer: %w", err)
	}
	if err := checkTimes(&uc.ClaimsData, time.Now()); err != nil {
		return "", fmt.Errorf("answer: %w", err)
	}
	if !hasTag(uc.Tags, TagRolePrefix+RoleNameServer) {
		return "", fmt.Errorf("answer: %w", Errf(fieldTags, "JWT of %s lacks tag %s%s: not a name server", uc.Subject, TagRolePrefix, RoleNameServer))
	}
	if uc.Subject != claimed {
		return "", fmt.Errorf("answer: %w", Errf(fieldSub, "%s is not Rsp-Signer %q", uc.Subject, claimed))
	}
	return VerifyAnswer(answer, subject, nonce)
}

func (t AnswerTrust) issuerTrusted(uc *jwt.UserClaims) error {
	if slices.Contains(t.Keys, uc.Issuer) {
		return nil
	}
	acct := uc.IssuerAccount
	if acct == "" {
		acct = uc.Issuer
	}
	if t.Issuer != "" && uc.Issuer == t.Issuer && acct == t.Account {
		return nil
	}
	want := []string{}
	if t.Issuer != "" {
		want = append(want, t.Issuer+" (account "+t.Account+")")
	}
	want = append(want, t.Keys...)
	return Errf(fieldIssuer, "%s (account %s) is not a trusted issuer of name server JWTs (%s)", uc.Issuer, acct, strings.Join(want, ", "))
}

func hasTag(tags jwt.TagList, tag string) bool {
	return slices.ContainsFunc(tags, func(t string) bool { return strings.EqualFold(strings.TrimSpace(t), tag) })
}

// SetJWT sets the Rsp-Jwt header of msg.
func SetJWT(msg *nats.Msg, token string) {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	msg.Header.Set(HeaderJWT, token)
}
