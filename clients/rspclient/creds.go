package rspclient

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/rserpool/rsp/events"
)

// LoadCreds reads a NATS .creds file (as `rsp auth` and nsc write them):
// the user JWT and the user nkey seed it names.
func LoadCreds(path string) (token string, kp nkeys.KeyPair, err error) {
	if path == "" {
		return "", nil, events.Errf("creds", "file path is empty")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("creds: %w", err)
	}
	defer wipe(data)
	token, err = jwt.ParseDecoratedJWT(data)
	if err != nil {
		return "", nil, fmt.Errorf("creds: %s: %w", path, err)
	}
	kp, err = jwt.ParseDecoratedUserNKey(data)
	if err != nil {
		return "", nil, fmt.Errorf("creds: %s holds no user nkey seed: %w", path, err)
	}
	if err := checkUserJWT(token, kp); err != nil {
		return "", nil, fmt.Errorf("creds: %s: %w", path, err)
	}
	return token, kp, nil
}

// checkUserJWT checks that token is a user JWT naming kp.
func checkUserJWT(token string, kp nkeys.KeyPair) error {
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return events.Errf("jwt", "is not a valid user JWT: %v", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return events.Errf("key", "%v", err)
	}
	if uc.Subject != pub {
		return events.Errf("jwt", "names user %s, not the signing key %s", uc.Subject, pub)
	}
	return nil
}

// WithCreds makes the client sign with the identity of a NATS .creds file:
// its user nkey signs every event, and every event carries its user JWT in
// Rsp-Jwt, as name servers with JWT authorization require. Resolution
// answers are then trusted only from name servers whose JWT (tag
// rsp-role:nameserver) comes from the same account signing key as the
// client's own (see events.VerifyAnswerChain), or from WithNameServerKeys.
//
// The connection is the caller's: connect with the same file and the
// user's own inbox prefix, e.g. nats.Connect(url, natsconn.Creds(path));
// New refuses a pe or pu connection on another prefix.
func WithCreds(path string) Option {
	return func(o *options) error {
		token, kp, err := LoadCreds(path)
		if err != nil {
			return err
		}
		o.kp, o.jwt = kp, token
		return nil
	}
}

// WithUserJWT is WithCreds for a JWT and nkey at hand: token must be a user
// JWT whose subject is kp.
func WithUserJWT(token string, kp nkeys.KeyPair) Option {
	return func(o *options) error {
		if kp == nil {
			return events.Errf("key", "is nil")
		}
		if err := checkUserSeed(kp); err != nil {
			return err
		}
		if err := checkUserJWT(token, kp); err != nil {
			return err
		}
		o.kp, o.jwt = kp, token
		return nil
	}
}

// WithNameServerKeys trusts resolution answers of further name servers:
// each key is either an account key or account signing key (A...) that
// issued name-server user JWTs (tag rsp-role:nameserver), or a name
// server's own answer key (U...), trusted with or without a JWT. With it,
// a client without creds also refuses answers of anyone else.
func WithNameServerKeys(keys ...string) Option {
	return func(o *options) error {
		for _, k := range keys {
			if !nkeys.IsValidPublicAccountKey(k) && !nkeys.IsValidPublicUserKey(k) {
				return events.Errf("name server key", "%q is neither an account (A...) nor a user (U...) public nkey", k)
			}
		}
		o.nsKeys = append(o.nsKeys, keys...)
		return nil
	}
}

// JWT is the client's user JWT (from WithCreds or WithUserJWT); "" without.
func (c *Client) JWT() string { return c.jwt }

// signEvent signs msg with the client's key and attaches its JWT.
func (c *Client) signEvent(msg *nats.Msg) error {
	if err := events.SignEvent(msg, c.signer); err != nil {
		return err
	}
	if c.jwt != "" {
		events.SetJWT(msg, c.jwt)
	}
	return nil
}

// answerTrust is whom the client trusts to answer: the issuer of its own
// JWT and the keys it was given.
func answerTrust(token string, keys []string) (events.AnswerTrust, error) {
	var t events.AnswerTrust
	if token != "" {
		var err error
		if t, err = events.TrustFromUserJWT(token); err != nil {
			return t, err
		}
	}
	t.Keys = slices.Clone(keys)
	return t, nil
}

// checkInbox checks that a pe or pu user's connection takes its replies on
// its own inbox prefix (events.InboxPrefix), the only one its credentials
// may subscribe to: otherwise every request would time out. Only a
// connection that authenticates with a user JWT is checked.
func checkInbox(nc *nats.Conn, token, pub string) error {
	if token == "" || nc.Opts.UserJWT == nil {
		return nil
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return events.Errf("jwt", "%v", err)
	}
	if !uc.Tags.Contains(events.TagRolePrefix+events.RolePE) && !uc.Tags.Contains(events.TagRolePrefix+events.RolePU) {
		return nil
	}
	want := events.InboxPrefix(pub) + "."
	if got := nc.NewInbox(); !strings.HasPrefix(got, want) {
		return events.Errf("inbox", "the connection's inbox %s is not under %s*: a pe or pu user receives replies there only; connect with natsconn.Creds(path) or nats.CustomInboxPrefix(events.InboxPrefix(userPub))", got, want)
	}
	return nil
}
