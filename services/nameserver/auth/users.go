package auth

import (
	"fmt"
	"slices"
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
	// and reads the outcomes.
	RolePE Role = "pe"
	// RolePU is a pool user: it resolves its pools, reports failures,
	// follows changes and reads the name space (the bucket), read-only.
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

// Permissions are the publish/subscribe allow lists of a user of scope
// with role, for pools (each a pool handle or AllPools). Everything not
// allowed is denied.
//
//   - nameserver, admin: publish and subscribe ">" (pools must be empty or
//     AllPools).
//   - pe (pools required): publish rsp.<scope>.register.<P> and
//     rsp.<scope>.deregister.<P>; subscribe rsp.<scope>.outcome.<P>.>,
//     rsp.<scope>.svc.<P>.> (its "nats" transports, events.ServiceSubject)
//     and _INBOX.> (PubAcks and replies); answer the requests it receives
//     (response permission: one reply per request, within ResponseTTL).
//   - pu (pools default AllPools): publish rsp.<scope>.resolve.<P>,
//     rsp.<scope>.failure.<P>, rsp.<scope>.svc.<P>.> (requests to the PEs'
//     "nats" transports), and the read-only JetStream API of bucket
//     rsp_<scope> (stream KV_rsp_<scope>, "S" below) that the Go client's
//     KeyValue, Get, GetRevision, Watch/WatchFiltered and ListKeys use:
//     $JS.API.INFO, $JS.API.STREAM.INFO.S, $JS.API.CONSUMER.CREATE.S and
//     .S.>, $JS.API.CONSUMER.DELETE.S.>, $JS.API.DIRECT.GET.S and .S.>,
//     $JS.API.STREAM.MSG.GET.S, and $JS.FC.S.> (flow-control replies of
//     a watch's ordered consumer; large buckets stall without them);
//     subscribe rsp.<scope>.changes.<P>, rsp.<scope>.nameservers.* (the
//     name-server beats, after which watches and caches read their pool
//     again) and _INBOX.>. The bucket is read scope-wide whatever the
//     pools.
func Permissions(scope string, role Role, pools []string) (jwt.Permissions, error) {
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
		p.Sub.Allow.Add("_INBOX.>")
		p.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: ResponseTTL}
	case RolePU:
		for _, pool := range pools {
			p.Pub.Allow.Add(
				events.Subject(scope, events.KindResolve, pool),
				events.Subject(scope, events.KindFailure, pool),
				events.ServiceSubjects(scope, pool),
			)
			p.Sub.Allow.Add(events.Subject(scope, events.KindChanges, pool))
		}
		p.Pub.Allow.Add(bucketReadAPI(scope)...)
		p.Sub.Allow.Add(events.NameServersSubject(scope), "_INBOX.>")
	}
	return p, nil
}

// bucketReadAPI is what the Go client's KeyValue, Get, Watch and ListKeys
// of bucket rsp_<scope> need, and nothing that writes.
func bucketReadAPI(scope string) []string {
	stream := "KV_" + events.Bucket(scope)
	return []string{
		"$JS.API.INFO",
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.CONSUMER.CREATE." + stream,
		"$JS.API.CONSUMER.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.DELETE." + stream + ".>",
		"$JS.API.DIRECT.GET." + stream,
		"$JS.API.DIRECT.GET." + stream + ".>",
		"$JS.API.STREAM.MSG.GET." + stream,
		"$JS.FC." + stream + ".>",
	}
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
	perms, err := Permissions(scope, role, pools)
	if err != nil {
		return nil, "", err
	}
	tags := []string{TagRole + string(role), TagScope + scope}
	return issue(a.signing, mustPub(a.kp), "rsp-"+string(role)+"@"+scope, perms, tags, expires)
}

// issue creates a user key and a JWT for it signed by signer (on behalf
// of issuerAccount when that is set) and formats both as a creds file.
func issue(signer nkeys.KeyPair, issuerAccount, name string, perms jwt.Permissions, tags []string, expires time.Duration) ([]byte, string, error) {
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return nil, "", err
	}
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
