package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
)

// ClaimsUpdateSubject is where the system user sends account JWTs to the
// servers' account resolvers.
const ClaimsUpdateSubject = "$SYS.REQ.CLAIMS.UPDATE"

// Revoke revokes user userPub of scope: every JWT of that user issued up
// to now is refused. It adds the user to the revocations of the scope's
// account JWT, re-signs it with the operator and saves it; the change
// reaches running servers with PushAccount (of AccountJWT(scope)), or at
// their next start through Configure.
func (s *Store) Revoke(scope, userPub string) error {
	if !nkeys.IsValidPublicUserKey(userPub) {
		return events.Errf("user", "%q is not a public user nkey (U...)", userPub)
	}
	a, err := s.account(scope)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ac, err := jwt.DecodeAccountClaims(a.jwt)
	if err != nil {
		return fmt.Errorf("account jwt of scope %s: %w", scope, err)
	}
	ac.Revoke(userPub)
	tok, err := s.signAccount(filepath.Join(s.dir, "accounts", scope, "account.jwt"), ac)
	if err != nil {
		return err
	}
	a.jwt = tok
	return nil
}

// Revoked reports whether scope's account revokes userPub (any JWT of it
// issued up to now).
func (s *Store) Revoked(scope, userPub string) (bool, error) {
	tok, err := s.AccountJWT(scope)
	if err != nil {
		return false, err
	}
	ac, err := jwt.DecodeAccountClaims(tok)
	if err != nil {
		return false, err
	}
	_, ok := ac.Revocations[userPub]
	return ok, nil
}

// PushAccount sends accountJWT to the running servers' account resolvers
// on $SYS.REQ.CLAIMS.UPDATE, over nc, which must be connected as the
// system user (SystemCredsPath), and checks the first server's answer.
// The servers apply it at once: a revoked user's connections are closed
// and its new connections refused. In a cluster the other servers get the
// request too, and the resolvers' sync spreads it to any that missed it.
func PushAccount(ctx context.Context, nc *nats.Conn, accountJWT string) error {
	msg, err := nc.RequestWithContext(ctx, ClaimsUpdateSubject, []byte(accountJWT))
	if errors.Is(err, nats.ErrNoResponders) {
		return errors.New("push account jwt: no server answers " + ClaimsUpdateSubject + " (is it in operator mode with a full account resolver, and is this the system user?)")
	}
	if err != nil {
		return fmt.Errorf("push account jwt: %w", err)
	}
	var resp struct {
		Data *struct {
			Account string `json:"account"`
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"data"`
		Error *struct {
			Account     string `json:"account"`
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("push account jwt: answer %q: %w", msg.Data, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("push account jwt %s: server refused it: %s (code %d)", resp.Error.Account, resp.Error.Description, resp.Error.Code)
	}
	if resp.Data == nil {
		return fmt.Errorf("push account jwt: unexpected answer %q", msg.Data)
	}
	return nil
}
