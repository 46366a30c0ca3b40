package nstest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
)

// Operator is a test NATS operator: it issues account JWTs.
type Operator struct {
	Key    nkeys.KeyPair
	Public string
}

// NewOperator makes an operator with a fresh key.
func NewOperator(t testing.TB) *Operator {
	t.Helper()
	kp, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	return &Operator{Key: kp, Public: pub}
}

// Account is a test account the way package auth makes one per scope: an
// account key and one signing key that issues every user.
type Account struct {
	Operator   *Operator
	Key        nkeys.KeyPair
	Public     string
	SigningKey nkeys.KeyPair
	SigningPub string
	// Claims are encoded by JWT; change them (Revoke, ...) and call JWT
	// again for the updated account JWT.
	Claims *jwt.AccountClaims
}

// NewAccount makes an account issued by o, with one signing key.
func (o *Operator) NewAccount(t testing.TB, name string) *Account {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	sk, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	skPub, _ := sk.PublicKey()
	ac := jwt.NewAccountClaims(pub)
	ac.Name = name
	ac.SigningKeys.Add(skPub)
	return &Account{Operator: o, Key: kp, Public: pub, SigningKey: sk, SigningPub: skPub, Claims: ac}
}

// JWT encodes the account's claims, signed by its operator (issued now).
func (a *Account) JWT(t testing.TB) string {
	t.Helper()
	tok, err := a.Claims.Encode(a.Operator.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// User is a test user: its nkey and user JWT.
type User struct {
	Key    nkeys.KeyPair
	Public string
	JWT    string
	Claims *jwt.UserClaims
}

// RolePermissions are test publish permissions of an rsp role in scope:
// a PE publishes events and resolves, a PU reports failures and resolves,
// name servers and admins publish anywhere.
func RolePermissions(role, scope string) jwt.Permissions {
	var p jwt.Permissions
	switch role {
	case events.RolePE:
		p.Pub.Allow.Add(events.ScopeEventSubjects(scope)...)
	case events.RolePU:
		p.Pub.Allow.Add(events.Subject(scope, events.KindFailure, "*"))
	default:
		return p
	}
	p.Pub.Allow.Add(events.Subject(scope, events.KindResolve, "*"), "$JS.API.>", "_INBOX.>")
	return p
}

// User issues a user of role in scope with the account's signing key
// (tags rsp-role:<role> and rsp-scope:<scope>, RolePermissions); edit, when
// given, changes the claims before they are signed.
func (a *Account) User(t testing.TB, role, scope string, edit ...func(*jwt.UserClaims)) *User {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = role
	uc.IssuerAccount = a.Public
	uc.Tags.Add(events.TagRolePrefix+role, events.TagScopePrefix+scope)
	uc.Permissions = RolePermissions(role, scope)
	for _, e := range edit {
		e(uc)
	}
	tok, err := uc.Encode(a.SigningKey)
	if err != nil {
		t.Fatal(err)
	}
	return &User{Key: kp, Public: pub, JWT: tok, Claims: uc}
}

// Creds writes the user's .creds file (JWT and seed) into a temporary
// folder and returns its path.
func (u *User) Creds(t testing.TB) string {
	t.Helper()
	seed, err := u.Key.Seed()
	if err != nil {
		t.Fatal(err)
	}
	b, err := jwt.FormatUserConfig(u.JWT, seed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "user.creds")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
