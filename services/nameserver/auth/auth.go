// Package auth creates, stores and serves the operator, accounts and users
// of an rsp installation: NATS's own decentralized JWT authorization, with
// no hand-made crypto.
//
// An installation has one operator, the system account ($SYS, used to push
// account updates to running servers) and one account per scope, named
// after the scope. Each scope account has one signing key; every user of
// the scope is issued by that signing key (its JWT's issuer_account is the
// scope account), carries the tags "rsp-role:<role>" and
// "rsp-scope:<scope>", and gets the publish/subscribe allow lists of its
// role (see Role). Scope accounts have JetStream enabled without limits
// and refuse bearer tokens.
//
// Layout of the store directory D (the name server uses <data>/auth);
// seeds and creds are 0600, directories 0700, JWTs 0644:
//
//	D/operator.nk                     operator seed
//	D/operator.jwt                    operator JWT (names the system account)
//	D/system/account.nk               system account seed
//	D/system/account.jwt              system account JWT
//	D/accounts/<scope>/account.nk     scope account seed
//	D/accounts/<scope>/signing.nk     scope account signing key seed (issues users)
//	D/accounts/<scope>/account.jwt    scope account JWT (limits, signing key, revocations)
//	D/creds/system.creds              system user (pushes account updates)
//	D/creds/<scope>/<role>.creds      one user per role: nameserver, admin, pe, pu
//	D/jwt/                            the NATS server's account resolver directory
//
// Seeds are the nkey seed text (SO..., SA..., SU...) and a newline; creds
// files are the usual NATS decorated JWT plus seed. The files under D are
// the source of truth: Configure loads them into the resolver directory at
// every start, where a newer JWT replaces an older one, and Revoke updates
// account.jwt and PushAccount sends it to running servers.
package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
)

// SystemAccountName is the name of the system account.
const SystemAccountName = "$SYS"

const (
	dirPerm  = 0o700
	seedPerm = 0o600
	jwtPerm  = 0o644
)

// Store is the operator, accounts and users of an installation, kept in
// a directory. Its methods are safe for concurrent use; two processes
// changing the same directory at once (say, two revocations at the same
// moment) may lose one change.
type Store struct {
	dir string
	// limits, when set, are the account limits Init gives every scope
	// account; nil keeps each account's own (DefaultAccountLimits for one
	// that has none yet).
	limits *AccountLimits

	mu       sync.Mutex
	operator nkeys.KeyPair
	opJWT    string
	sys      nkeys.KeyPair
	sysJWT   string
	accounts map[string]*account
}

// account is one scope's account.
type account struct {
	kp      nkeys.KeyPair
	signing nkeys.KeyPair
	jwt     string
}

// Init creates the store in dir, or completes it: whatever is missing (the
// dir itself, the operator, the system account, an account for each of
// scopes, a creds file per role) is created, and whatever exists is reused,
// so a second Init changes nothing and a later Init with a new scope adds
// that scope's account. Scopes made earlier stay. A role's creds file is
// issued anew only when it is missing, unreadable, revoked, or its
// permissions are not those of its role (all pools). No scopes means the
// default scope.
func Init(dir string, scopes []string, opts ...InitOption) (*Store, error) {
	if len(scopes) == 0 {
		scopes = []string{events.DefaultScope}
	}
	for _, sc := range scopes {
		if err := events.CheckScope(sc); err != nil {
			return nil, err
		}
	}
	if err := mkdirs(dir, filepath.Join(dir, "system"), filepath.Join(dir, "accounts"), filepath.Join(dir, "creds")); err != nil {
		return nil, err
	}
	s := &Store{dir: dir, accounts: map[string]*account{}}
	for _, o := range opts {
		o(s)
	}
	var err error
	if s.operator, err = loadOrCreateKey(s.path("operator.nk"), nkeys.PrefixByteOperator); err != nil {
		return nil, err
	}
	if s.sys, err = loadOrCreateKey(s.path("system", "account.nk"), nkeys.PrefixByteAccount); err != nil {
		return nil, err
	}
	if err := s.ensureOperatorJWT(); err != nil {
		return nil, err
	}
	if s.sysJWT, err = s.ensureAccountJWT(s.path("system", "account.jwt"), SystemAccountName, s.sys, nil); err != nil {
		return nil, err
	}
	if err := s.ensureSystemUser(); err != nil {
		return nil, err
	}
	// Scopes made by an earlier Init stay.
	existing, err := s.scopeDirs()
	if err != nil {
		return nil, err
	}
	for _, sc := range existing {
		if !slices.Contains(scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	for _, sc := range scopes {
		if err := s.ensureScope(sc); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// InitOption configures Init.
type InitOption func(*Store)

// WithAccountLimits gives every scope account limits l (re-signing the
// accounts whose limits differ). Without it, Init keeps each account's
// limits, and gives DefaultAccountLimits to one that has none.
func WithAccountLimits(l AccountLimits) InitOption {
	return func(s *Store) { s.limits = &l }
}

// Open opens a store that Init made.
func Open(dir string) (*Store, error) {
	s := &Store{dir: dir, accounts: map[string]*account{}}
	if _, err := os.Stat(s.path("operator.nk")); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no rsp auth store in %s (create it with 'rsp auth init')", dir)
	}
	var err error
	if s.operator, err = loadKey(s.path("operator.nk"), nkeys.PrefixByteOperator); err != nil {
		return nil, err
	}
	if s.sys, err = loadKey(s.path("system", "account.nk"), nkeys.PrefixByteAccount); err != nil {
		return nil, err
	}
	if s.opJWT, err = s.loadJWT(s.path("operator.jwt"), s.operator); err != nil {
		return nil, err
	}
	if s.sysJWT, err = s.loadJWT(s.path("system", "account.jwt"), s.sys); err != nil {
		return nil, err
	}
	scopes, err := s.scopeDirs()
	if err != nil {
		return nil, err
	}
	for _, sc := range scopes {
		a := &account{}
		d := filepath.Join("accounts", sc)
		if a.kp, err = loadKey(s.path(d, "account.nk"), nkeys.PrefixByteAccount); err != nil {
			return nil, err
		}
		if a.signing, err = loadKey(s.path(d, "signing.nk"), nkeys.PrefixByteAccount); err != nil {
			return nil, err
		}
		if a.jwt, err = s.loadJWT(s.path(d, "account.jwt"), a.kp); err != nil {
			return nil, err
		}
		s.accounts[sc] = a
	}
	return s, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Scopes are the scopes that have an account, sorted.
func (s *Store) Scopes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.accounts))
	for sc := range s.accounts {
		out = append(out, sc)
	}
	slices.Sort(out)
	return out
}

// OperatorPublicKey is the operator's public key (O...).
func (s *Store) OperatorPublicKey() string { return mustPub(s.operator) }

// SystemAccountPublicKey is the system account's public key (A...).
func (s *Store) SystemAccountPublicKey() string { return mustPub(s.sys) }

// AccountPublicKey is the public key (A...) of scope's account.
func (s *Store) AccountPublicKey(scope string) (string, error) {
	a, err := s.account(scope)
	if err != nil {
		return "", err
	}
	return mustPub(a.kp), nil
}

// SigningKeyPublicKey is the public key of the signing key that issues
// scope's users.
func (s *Store) SigningKeyPublicKey(scope string) (string, error) {
	a, err := s.account(scope)
	if err != nil {
		return "", err
	}
	return mustPub(a.signing), nil
}

// AccountJWT is the current JWT of scope's account.
func (s *Store) AccountJWT(scope string) (string, error) {
	a, err := s.account(scope)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return a.jwt, nil
}

// CredsPath is the creds file of scope's user for role, made by Init.
func (s *Store) CredsPath(scope string, role Role) string {
	return credsPath(s.dir, scope, role)
}

func credsPath(storeDir, scope string, role Role) string {
	return filepath.Join(storeDir, "creds", scope, string(role)+".creds")
}

// FindCreds is how rsp's programs choose their credentials: given (a
// --creds flag) when set, else the role's creds file of the store in
// dataDir/auth (a name server's --data) when it exists, else "" (no
// credentials: a name server run with --insecure).
func FindCreds(given, dataDir, scope string, role Role) string {
	if given != "" {
		return given
	}
	path := credsPath(filepath.Join(dataDir, "auth"), scope, role)
	if _, err := os.Stat(path); err == nil {
		return path
	}
	return ""
}

// SystemCredsPath is the creds file of the system user, which may push
// account updates to running servers.
func (s *Store) SystemCredsPath() string { return s.path("creds", "system.creds") }

// ResolverDir is the NATS server's account resolver directory.
func (s *Store) ResolverDir() string { return s.path("jwt") }

func (s *Store) account(scope string) (*account, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.accounts[scope]
	if !ok {
		if err := events.CheckScope(scope); err != nil {
			return nil, err
		}
		return nil, events.Errf("scope", "no account for scope %q in %s (add it with 'rsp auth init --scope %s')", scope, s.dir, scope)
	}
	return a, nil
}

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

// scopeDirs lists the scopes under D/accounts.
func (s *Store) scopeDirs() ([]string, error) {
	ents, err := os.ReadDir(s.path("accounts"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && events.CheckScope(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func (s *Store) ensureOperatorJWT() error {
	opPub, sysPub := mustPub(s.operator), mustPub(s.sys)
	path := s.path("operator.jwt")
	if tok, err := readJWT(path); err != nil {
		return err
	} else if tok != "" {
		oc, err := jwt.DecodeOperatorClaims(tok)
		if err == nil && oc.Subject == opPub && oc.SystemAccount == sysPub {
			s.opJWT = tok
			return nil
		}
	}
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "rsp"
	oc.SystemAccount = sysPub
	tok, err := oc.Encode(s.operator)
	if err != nil {
		return fmt.Errorf("sign operator jwt: %w", err)
	}
	if err := writeFile(path, []byte(tok+"\n"), jwtPerm); err != nil {
		return err
	}
	s.opJWT = tok
	return nil
}

// ensureAccountJWT reuses the account JWT at path if it is what it should
// be, else (re)signs it, keeping its revocations. signing is nil for the
// system account (no JetStream, no signing key).
func (s *Store) ensureAccountJWT(path, name string, kp, signing nkeys.KeyPair) (string, error) {
	pub := mustPub(kp)
	var ac *jwt.AccountClaims
	tok, err := readJWT(path)
	if err != nil {
		return "", err
	}
	if tok != "" {
		if c, err := jwt.DecodeAccountClaims(tok); err == nil && c.Subject == pub {
			ac = c
		}
	}
	if ac != nil && ac.Issuer == mustPub(s.operator) && s.accountComplete(ac, name, signing) {
		return tok, nil
	}
	if ac == nil {
		ac = jwt.NewAccountClaims(pub)
	}
	ac.Name = name
	ac.Limits.DisallowBearer = true
	if signing != nil {
		ac.SigningKeys.Add(mustPub(signing))
		s.wantLimits(ac).apply(ac)
		ac.Imports = slices.DeleteFunc(ac.Imports, func(i *jwt.Import) bool { return i.Name == disconnectShare })
		ac.Imports.Add(s.disconnectImport(pub))
	} else {
		ac.Exports = slices.DeleteFunc(ac.Exports, func(e *jwt.Export) bool { return e.Name == disconnectShare })
		ac.Exports.Add(disconnectExport())
	}
	return s.signAccount(path, ac)
}

// disconnectShare names the system account's export of the disconnect
// advisories and each scope account's import of its own.
const disconnectShare = "rsp-disconnects"

// disconnectExport is the system account's stream export of
// $SYS.ACCOUNT.*.DISCONNECT, with the account in token 3: an account may
// import only $SYS.ACCOUNT.<itself>.DISCONNECT, its own clients'
// disconnects. The name servers use it to take out at once the PEs whose
// connection closed (see package server).
func disconnectExport() *jwt.Export {
	return &jwt.Export{
		Name: disconnectShare, Subject: events.DisconnectExport, Type: jwt.Stream,
		AccountTokenPosition: events.DisconnectAccountToken,
		Info:                 jwt.Info{Description: "client disconnect advisories; each account may import its own"},
	}
}

// disconnectImport is a scope account's import of its own disconnect
// advisories; they appear in the account on the same subject,
// $SYS.ACCOUNT.<account>.DISCONNECT.
func (s *Store) disconnectImport(accountPub string) *jwt.Import {
	return &jwt.Import{
		Name: disconnectShare, Subject: jwt.Subject(events.DisconnectSubject(accountPub)),
		Account: mustPub(s.sys), Type: jwt.Stream,
	}
}

// wantLimits are the limits scope account ac must carry.
func (s *Store) wantLimits(ac *jwt.AccountClaims) AccountLimits {
	if s.limits != nil {
		return *s.limits
	}
	if l, ok := limitsOf(ac); ok {
		return l
	}
	return DefaultAccountLimits()
}

// accountComplete tells whether ac is all an account JWT of the store
// must be; one made by an older version (say, without the disconnect
// export or import) is not, and Init signs it again.
func (s *Store) accountComplete(ac *jwt.AccountClaims, name string, signing nkeys.KeyPair) bool {
	if ac.Name != name || !ac.Limits.DisallowBearer {
		return false
	}
	if signing == nil {
		want := disconnectExport()
		return slices.ContainsFunc(ac.Exports, func(e *jwt.Export) bool {
			return e.Name == want.Name && e.Subject == want.Subject && e.Type == want.Type &&
				e.AccountTokenPosition == want.AccountTokenPosition && !e.TokenReq
		})
	}
	want := s.disconnectImport(ac.Subject)
	have, _ := limitsOf(ac)
	return ac.SigningKeys.Contains(mustPub(signing)) && have == s.wantLimits(ac) &&
		ac.Limits.JetStreamLimits.MemoryStorage == jwt.NoLimit && ac.Limits.JetStreamLimits.DiskStorage == jwt.NoLimit &&
		slices.ContainsFunc(ac.Imports, func(i *jwt.Import) bool {
			return i.Name == want.Name && i.Subject == want.Subject && i.Account == want.Account &&
				i.Type == want.Type && i.LocalSubject == ""
		})
}

// signAccount signs ac with the operator and saves it at path.
//
// A re-signed JWT must be issued in a later second than the one it
// replaces: the JWT id is a hash of the standard claims only (not of the
// revocations or limits), and nats-server's resolver directory ignores a
// JWT whose id it already has, so a change signed in the same second
// would be lost when Configure loads it. The wait is under a second.
func (s *Store) signAccount(path string, ac *jwt.AccountClaims) (string, error) {
	if ac.IssuedAt > 0 {
		if wait := time.Until(time.Unix(ac.IssuedAt+1, 0)); wait > 0 {
			time.Sleep(wait)
		}
	}
	tok, err := ac.Encode(s.operator)
	if err != nil {
		return "", fmt.Errorf("sign account jwt %s: %w", ac.Name, err)
	}
	if err := writeFile(path, []byte(tok+"\n"), jwtPerm); err != nil {
		return "", err
	}
	return tok, nil
}

func (s *Store) ensureSystemUser() error {
	path := s.SystemCredsPath()
	sysPub := mustPub(s.sys)
	if uc, err := readCredsClaims(path); err != nil {
		return err
	} else if uc != nil && uc.Issuer == sysPub && !revoked(s.sysJWT, uc) {
		return nil
	}
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return err
	}
	creds, _, err := issue(ukp, s.sys, "", "rsp-system", jwt.Permissions{}, nil, 0)
	if err != nil {
		return err
	}
	return writeFile(path, creds, seedPerm)
}

func (s *Store) ensureScope(scope string) error {
	d := filepath.Join("accounts", scope)
	if err := mkdirs(s.path(d), s.path("creds", scope)); err != nil {
		return err
	}
	a := &account{}
	var err error
	if a.kp, err = loadOrCreateKey(s.path(d, "account.nk"), nkeys.PrefixByteAccount); err != nil {
		return err
	}
	if a.signing, err = loadOrCreateKey(s.path(d, "signing.nk"), nkeys.PrefixByteAccount); err != nil {
		return err
	}
	if a.jwt, err = s.ensureAccountJWT(s.path(d, "account.jwt"), scope, a.kp, a.signing); err != nil {
		return err
	}
	s.accounts[scope] = a
	accPub := mustPub(a.kp)
	for _, role := range Roles() {
		path := s.CredsPath(scope, role)
		uc, err := readCredsClaims(path)
		if err != nil {
			return err
		}
		var want jwt.Permissions
		if uc != nil {
			if want, err = Permissions(scope, role, []string{AllPools}, uc.Subject); err != nil {
				return err
			}
		}
		if uc != nil && uc.IssuerAccount == accPub && uc.Issuer == mustPub(a.signing) &&
			samePermissions(uc.Permissions, want) && !revoked(a.jwt, uc) {
			continue
		}
		creds, _, err := s.IssueUser(scope, role, []string{AllPools}, 0)
		if err != nil {
			return err
		}
		if err := writeFile(path, creds, seedPerm); err != nil {
			return err
		}
	}
	return nil
}

// samePermissions compares the allow and deny lists of a and b.
func samePermissions(a, b jwt.Permissions) bool {
	return slices.Equal(a.Pub.Allow, b.Pub.Allow) && slices.Equal(a.Pub.Deny, b.Pub.Deny) &&
		slices.Equal(a.Sub.Allow, b.Sub.Allow) && slices.Equal(a.Sub.Deny, b.Sub.Deny) &&
		((a.Resp == nil && b.Resp == nil) || (a.Resp != nil && b.Resp != nil && *a.Resp == *b.Resp))
}

// loadJWT reads a JWT file and checks that its subject is kp.
func (s *Store) loadJWT(path string, kp nkeys.KeyPair) (string, error) {
	tok, err := readJWT(path)
	if err != nil {
		return "", err
	}
	if tok == "" {
		return "", fmt.Errorf("%s is missing (run 'rsp auth init' to repair the store)", path)
	}
	c, err := jwt.Decode(tok)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if c.Claims().Subject != mustPub(kp) {
		return "", fmt.Errorf("%s: subject %s does not match its key", path, c.Claims().Subject)
	}
	return tok, nil
}

// readJWT reads a JWT file; a missing file is "".
func readJWT(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// readCredsClaims decodes the user JWT of a creds file; a missing or
// unreadable file is nil.
func readCredsClaims(path string) (*jwt.UserClaims, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	tok, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return nil, nil
	}
	if _, err := jwt.ParseDecoratedUserNKey(b); err != nil {
		return nil, nil
	}
	uc, err := jwt.DecodeUserClaims(tok)
	if err != nil {
		return nil, nil
	}
	return uc, nil
}

// revoked reports whether the account JWT accountJWT revokes uc.
func revoked(accountJWT string, uc *jwt.UserClaims) bool {
	ac, err := jwt.DecodeAccountClaims(accountJWT)
	if err != nil {
		return false
	}
	return ac.IsClaimRevoked(uc)
}

func loadOrCreateKey(path string, prefix nkeys.PrefixByte) (nkeys.KeyPair, error) {
	kp, err := loadKey(path, prefix)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return kp, err
	}
	kp, err = nkeys.CreatePair(prefix)
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	if err := writeFile(path, append(seed, '\n'), seedPerm); err != nil {
		return nil, err
	}
	return kp, nil
}

func loadKey(path string, prefix nkeys.PrefixByte) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
	if err != nil {
		return nil, fmt.Errorf("%s: not an nkey seed: %w", path, err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if nkeys.Prefix(pub) != prefix {
		return nil, fmt.Errorf("%s: key %s is not a %s key", path, pub, prefix)
	}
	return kp, nil
}

func mustPub(kp nkeys.KeyPair) string {
	pub, err := kp.PublicKey()
	if err != nil {
		panic("auth: key pair without public key: " + err.Error())
	}
	return pub
}

func mkdirs(dirs ...string) error {
	for _, d := range dirs {
		if err := os.MkdirAll(d, dirPerm); err != nil {
			return err
		}
		if err := os.Chmod(d, dirPerm); err != nil {
			return err
		}
	}
	return nil
}

// writeFile writes data to path atomically (a temporary file renamed over
// it) with mode perm.
func writeFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
