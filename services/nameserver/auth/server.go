package auth

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
)

// ResolverSyncInterval is how often the servers' account resolvers
// compare their JWTs with each other (and fetch what they miss).
const ResolverSyncInterval = time.Minute

// Configure puts a NATS server in operator mode with this store's
// operator: the system account is the store's, anonymous connections are
// refused (only users of the store's accounts may connect), and accounts
// are resolved by nats-server's full directory resolver ("resolver: full")
// in ResolverDir, which takes account updates on $SYS.REQ.CLAIMS.UPDATE
// (see PushAccount) and keeps them across restarts. Every account JWT of
// the store is loaded into the resolver at each call, where it replaces
// an older one (so a revocation saved while the server was down applies
// at its next start). Use it as embedded.Config.Configure.
func (s *Store) Configure(opts *server.Options) error {
	if err := s.refresh(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	op, err := jwt.DecodeOperatorClaims(s.opJWT)
	if err != nil {
		return fmt.Errorf("operator jwt: %w", err)
	}
	if err := mkdirs(s.ResolverDir()); err != nil {
		return err
	}
	res, err := server.NewDirAccResolver(s.ResolverDir(), 0, ResolverSyncInterval, server.NoDelete)
	if err != nil {
		return fmt.Errorf("account resolver in %s: %w", s.ResolverDir(), err)
	}
	load := map[string]string{mustPub(s.sys): s.sysJWT}
	for _, a := range s.accounts {
		load[mustPub(a.kp)] = a.jwt
	}
	for pub, tok := range load {
		if err := res.Store(pub, tok); err != nil {
			res.Close()
			return fmt.Errorf("account resolver: store %s: %w", pub, err)
		}
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{op}
	opts.TrustedKeys = nil
	opts.SystemAccount = mustPub(s.sys)
	opts.AccountResolver = res
	opts.NoAuthUser = ""
	opts.Accounts = nil
	opts.Users = nil
	opts.Nkeys = nil
	return nil
}

// refresh picks up account JWTs that another process (rsp auth revoke)
// saved since the store was opened, when they are newer.
func (s *Store) refresh() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for scope, a := range s.accounts {
		path := filepath.Join(s.dir, "accounts", scope, "account.jwt")
		tok, err := readJWT(path)
		if err != nil {
			return err
		}
		if tok == "" || tok == a.jwt {
			continue
		}
		disk, err := jwt.DecodeAccountClaims(tok)
		if err != nil || disk.Subject != mustPub(a.kp) || disk.Issuer != mustPub(s.operator) {
			continue
		}
		mem, err := jwt.DecodeAccountClaims(a.jwt)
		if err != nil || disk.IssuedAt >= mem.IssuedAt {
			a.jwt = tok
		}
	}
	return nil
}
