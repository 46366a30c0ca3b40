package auth

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
)

// Role is what a user of a scope may do.
type Role string

const (
	// RoleNameServer is a name server: everything in its scope's account.
	RoleNameServer Role = "nameserver"
	// RoleAdmin is an operator of the installation: everything in the
	// scope's account.
	RoleAdmin Role = "admin"
	// RolePE is a pool element: it registers and deregisters in its pools
	// and reads the outcomes, and may use its pools as a pu does.
	RolePE Role = "pe"
	// RolePU is a pool user: it resolves its pools, reports failures,
	// follows changes and reads its pools through the name servers.
	RolePU Role = "pu"
)

// ResponseTTL is how long a PE may take to answer a request it received
// (its user JWT's response permission): one reply each, within this time.
const ResponseTTL = 2 * time.Minute

// AllPools in a pool list stands for every pool of the scope.
const AllPools = "*"

// Tag prefixes of user JWTs: "rsp-role:<role>", "rsp-scope:<scope>".
const (
	TagRole  = "rsp-role:"
	TagScope = "rsp-scope:"
)

// Roles are all roles, in the order Init makes their creds.
func Roles() []Role { return []Role{RoleNameServer, RoleAdmin, RolePE, RolePU} }

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !slices.Contains(Roles(), r) {
		return "", events.Errf("role", "%q is not one of nameserver, admin, pe, pu", s)
	}
	return r, nil
}

// Permissions are the publish/subscribe allow lists of user userPub of
// scope with role, for pools (each a pool handle or AllPools). Everything
// not allowed is denied. <P> is each pool, I is the user's own inbox
// prefix (events.InboxPrefix(userPub)).
//
//   - nameserver, admin: publish and subscribe ">" (pools must be empty or
//     AllPools).
//   - pu (pools default AllPools): publish rsp.<scope>.resolve.<P>,
//     rsp.<scope>.failure.<P> (a JetStream publish: its PubAck comes to
//     I), rsp.<scope>.read.<P> (reads through the name servers),
//     rsp.<scope>.svc.<P>.> (requests to the PEs' "nats" transports), and
//     with AllPools rsp.<scope>.pools; subscribe rsp.<scope>.changes.<P>,
//     rsp.<scope>.nameservers.* (the name-server beats, after which
//     watches and caches read their pool again) and I.>. No JetStream API:
//     nobody but the name servers touches rsp's streams and consumers.
//   - pe (pools required): what a pu of its pools may (a PE may be a PU,
//     RFC 5351), and publish rsp.<scope>.register.<P> and
//     rsp.<scope>.deregister.<P>; subscribe rsp.<scope>.outcome.<P>.> and
//     rsp.<scope>.svc.<P>.> (its "nats" transports, events.ServiceSubject);
//     answer the requests it receives (response permission: one reply per
//     request, within ResponseTTL).
func Permissions(scope string, role Role, pools []string, userPub string) (jwt.Permissions, error) {
	var p jwt.Permissions
	if err := events.CheckScope(scope); err != nil {
		return p, err
	}
	if _, err := ParseRole(string(role)); err != nil {
		return p, err
	}
	pools, err := checkPools(role, pools)
	if err != nil {
		return p, err
	}
	switch role {
	case RoleNameServer, RoleAdmin:
		p.Pub.Allow.Add(">")
		p.Sub.Allow.Add(">")
		return p, nil
	case RolePE:
		for _, pool := range pools {
			p.Pub.Allow.Add(
				events.Subject(scope, events.KindRegister, pool),
				events.Subject(scope, events.KindDeregister, pool),
			)
			p.Sub.Allow.Add(
				events.Subject(scope, events.KindOutcome, pool)+".>",
				events.ServiceSubjects(scope, pool),
			)
		}
		p.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: ResponseTTL}
	}
	if !nkeys.IsValidPublicUserKey(userPub) {
		return p, events.Errf("user", "%q is not a public user nkey (U...)", userPub)
	}
	for _, pool := range pools {
		p.Pub.Allow.Add(
			events.Subject(scope, events.KindResolve, pool),
			events.Subject(scope, events.KindFailure, pool),
			events.Subject(scope, events.KindRead, pool),
			events.ServiceSubjects(scope, pool),
		)
		p.Sub.Allow.Add(events.Subject(scope, events.KindChanges, pool))
		if pool == AllPools {
			p.Pub.Allow.Add(events.PoolsSubject(scope))
		}
	}
	p.Sub.Allow.Add(events.NameServersSubject(scope), events.InboxPrefix(userPub)+".>")
	return p, nil
}

// checkPools validates and normalizes the pools of a role.
func checkPools(role Role, pools []string) ([]string, error) {
	var out []string
	for _, p := range pools {
		if p != AllPools {
			if err := events.CheckPool(p); err != nil {
				return nil, err
			}
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if slices.Contains(out, AllPools) {
		out = []string{AllPools}
	}
	switch role {
	case RoleNameServer, RoleAdmin:
		if len(out) > 0 && out[0] != AllPools {
			return nil, events.Errf("pool", "role %s has the whole scope; pools apply to roles pe and pu only", role)
		}
		return nil, nil
	case RolePE:
		if len(out) == 0 {
			return nil, events.Errf("pool", "role pe needs at least one pool (or %q for all pools)", AllPools)
		}
	case RolePU:
		if len(out) == 0 {
			out = []string{AllPools}
		}
	}
	return out, nil
}

// IssueUser makes a new user of scope with role and pools (see
// Permissions), issued by the scope account's signing key, and returns its
// creds file content and public key. expires > 0 makes the user JWT expire
// after that long; 0 never.
func (s *Store) IssueUser(scope string, role Role, pools []string, expires time.Duration) (creds []byte, userPub string, err error) {
	if expires < 0 {
		return nil, "", events.Errf("expires", "%s is negative", expires)
	}
	a, err := s.account(scope)
	if err != nil {
		return nil, "", err
	}
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, "", err
	}
	perms, err := Permissions(scope, role, pools, mustPub(ukp))
	if err != nil {
		return nil, "", err
	}
	tags := []string{TagRole + string(role), TagScope + scope}
	return issue(ukp, a.signing, mustPub(a.kp), "rsp-"+string(role)+"@"+scope, perms, tags, expires)
}

// issue makes a JWT for user key ukp signed by signer (on behalf of
// issuerAccount when that is set) and formats both as a creds file.
func issue(ukp, signer nkeys.KeyPair, issuerAccount, name string, perms jwt.Permissions, tags []string, expires time.Duration) ([]byte, string, error) {
	upub := mustPub(ukp)
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	uc.IssuerAccount = issuerAccount
	uc.Permissions = perms
	uc.Tags.Add(tags...)
	if expires > 0 {
		uc.Expires = time.Now().Add(expires).Unix()
	}
	tok, err := uc.Encode(signer)
	if err != nil {
		return nil, "", fmt.Errorf("sign user jwt: %w", err)
	}
	seed, err := ukp.Seed()
	if err != nil {
		return nil, "", err
	}
	creds, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		return nil, "", err
	}
	return creds, upub, nil
}

// PermissionsTable is the Markdown table of every role's permissions, as
// Permissions makes them, for a user given one pool <pool> (pu and pe)
// and for a pu given every pool ("*"): the README shows it (a test keeps
// the two equal) and `rsp auth roles` prints it.
func PermissionsTable() string {
	const scope, pool, user = "scope", "POOL", "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"
	show := func(subjects []string) string {
		out := make([]string, len(subjects))
		for i, s := range subjects {
			s = strings.ReplaceAll(s, "rsp."+scope+".", "rsp.<scope>.")
			s = strings.ReplaceAll(s, pool, "<pool>")
			s = strings.ReplaceAll(s, user, "<user>")
			out[i] = "`" + s + "`"
		}
		return strings.Join(out, ", ")
	}
	var b strings.Builder
	b.WriteString("| role | pools | may publish | may subscribe | replies to requests it receives |\n|---|---|---|---|---|\n")
	for _, r := range []struct {
		role  Role
		pools []string
	}{{RolePU, []string{pool}}, {RolePU, []string{AllPools}}, {RolePE, []string{pool}}, {RoleNameServer, nil}, {RoleAdmin, nil}} {
		p, err := Permissions(scope, r.role, r.pools, user)
		if err != nil {
			panic(err) // fixed arguments: a bug
		}
		pools := "—"
		if len(r.pools) > 0 {
			pools = show(r.pools)
		}
		resp := "no"
		if p.Resp != nil {
			resp = fmt.Sprintf("%d each, within %s", p.Resp.MaxMsgs, p.Resp.Expires)
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", r.role, pools, show(p.Pub.Allow), show(p.Sub.Allow), resp)
	}
	return b.String()
}
