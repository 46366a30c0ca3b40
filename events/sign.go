package events

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Header names of signed messages.
const (
	HeaderSigner    = "Rsp-Signer"
	HeaderSignature = "Rsp-Signature"
	HeaderJWT       = "Rsp-Jwt"
	HeaderNonce     = "Rsp-Nonce"
	HeaderMsgID     = nats.MsgIdHdr // Nats-Msg-Id
	// HeaderCheck (value "1") marks a name server's check of a reported
	// PE's nats transport (rsp extension): a request with an empty body
	// to the transport's subject. Any answer passes; a PE may answer it
	// at once with an empty body without running its service.
	HeaderCheck = "Rsp-Check"
	// HeaderSession carries a pool user's session id on every request to a
	// PE's nats transport (rsp extension).
	HeaderSession = "Rsp-Session"
	// HeaderCookie carries the state cookie (rsp extension): a PE sets it
	// on a reply, the session presents the latest one on every request
	// that follows, also to the PE it fails over to.
	HeaderCookie = "Rsp-Cookie"
	// HeaderError on a reply says the PE's handler failed the request; its
	// value is the reason. The PE itself is fine: no failover.
	HeaderError = "Rsp-Error"
	// HeaderReason is on the purge marker of every removal a name server
	// writes in a scope's bucket: the removal's reason (Reason*), so that
	// a reader that missed the change message still learns why a PE left.
	HeaderReason = "Rsp-Reason"
)

var sigEncoding = base64.RawURLEncoding

// signed returns the signed bytes: the parts joined by "\n".
func signed(parts ...[]byte) []byte {
	n := len(parts) - 1
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, p...)
	}
	return b
}

// KeySigner signs with an nkey: an nkeys.KeyPair, or a Signer, which
// is the same key made ready once for many signatures.
type KeySigner interface {
	PublicKey() (string, error)
	Sign(data []byte) ([]byte, error)
}

// Signer is a user nkey prepared for signing many messages: nkeys
// re-derives the Ed25519 key from the seed at every call, which costs more
// than the signature itself. Signatures are the same as the KeyPair's.
type Signer struct {
	pub  string
	priv ed25519.PrivateKey
}

// NewSigner prepares kp for repeated signing.
func NewSigner(kp nkeys.KeyPair) (*Signer, error) {
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	_, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, err
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	return &Signer{pub: pub, priv: ed25519.NewKeyFromSeed(raw)}, nil
}

// PublicKey is the public nkey (U...).
func (s *Signer) PublicKey() (string, error) { return s.pub, nil }

// Sign signs data with Ed25519.
func (s *Signer) Sign(data []byte) ([]byte, error) { return ed25519.Sign(s.priv, data), nil }

func sign(kp KeySigner, h nats.Header, data []byte) error {
	if h == nil {
		return errors.New("sign: nil header")
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return err
	}
	sig, err := kp.Sign(data)
	if err != nil {
		return err
	}
	h.Set(HeaderSigner, pub)
	h.Set(HeaderSignature, sigEncoding.EncodeToString(sig))
	return nil
}

func verify(h nats.Header, data []byte) (string, error) {
	signer := h.Get(HeaderSigner)
	if signer == "" {
		return "", Errf(HeaderSigner, "header is missing")
	}
	if !nkeys.IsValidPublicUserKey(signer) {
		return "", Errf(HeaderSigner, "%q is not a public user nkey (U...)", signer)
	}
	sig, err := sigEncoding.DecodeString(h.Get(HeaderSignature))
	if err != nil || len(sig) == 0 {
		return "", Errf(HeaderSignature, "is not base64url without padding")
	}
	kp, err := nkeys.FromPublicKey(signer)
	if err != nil {
		return "", Errf(HeaderSigner, "%v", err)
	}
	if err := kp.Verify(data, sig); err != nil {
		return "", Errf(HeaderSignature, "does not verify against %s over subject and body", signer)
	}
	return signer, nil
}

// SignEvent sets Rsp-Signer and Rsp-Signature on msg: an Ed25519 signature
// by kp over "<subject>\n<body>".
func SignEvent(msg *nats.Msg, kp KeySigner) error {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	return sign(kp, msg.Header, signed([]byte(msg.Subject), msg.Data))
}

// VerifyEvent checks an event's signature and returns its signer.
func VerifyEvent(msg *nats.Msg) (string, error) {
	return verify(msg.Header, signed([]byte(msg.Subject), msg.Data))
}

// SignAnswer signs a resolution answer over
// "<request subject>\n<Rsp-Nonce>\n<body>" and sets the headers on h.
func SignAnswer(h nats.Header, kp KeySigner, subject, nonce string, body []byte) error {
	if s, ok := kp.(*Signer); ok && h != nil {
		var sig [sigEncodedLen]byte
		h.Set(HeaderSigner, s.pub)
		h.Set(HeaderSignature, string(s.AppendAnswerSignature(sig[:0], subject, nonce, body)))
		return nil
	}
	return sign(kp, h, signed([]byte(subject), []byte(nonce), body))
}

// sigEncodedLen is the length of an encoded Ed25519 signature.
const sigEncodedLen = 86 // base64.RawURLEncoding.EncodedLen(ed25519.SignatureSize)

// signedBufs holds the buffers the signed bytes are joined in.
var signedBufs = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledSigned bounds the buffers kept in signedBufs.
const maxPooledSigned = 64 << 10

// AppendAnswerSignature appends to dst the Rsp-Signature value (base64url
// without padding) of an answer signed over
// "<request subject>\n<Rsp-Nonce>\n<body>", as SignAnswer sets it, without
// allocating on the way. The Rsp-Signer value is PublicKey.
func (s *Signer) AppendAnswerSignature(dst []byte, subject, nonce string, body []byte) []byte {
	bp := signedBufs.Get().(*[]byte)
	b := append((*bp)[:0], subject...)
	b = append(b, '\n')
	b = append(b, nonce...)
	b = append(b, '\n')
	b = append(b, body...)
	sig := ed25519.Sign(s.priv, b)
	if cap(b) <= maxPooledSigned {
		*bp = b
		signedBufs.Put(bp)
	}
	return sigEncoding.AppendEncode(dst, sig)
}

// VerifyAnswer checks the signature of an answer to a request on subject
// that carried nonce, and returns the answer's signer.
func VerifyAnswer(answer *nats.Msg, subject, nonce string) (string, error) {
	if answer.Header == nil {
		return "", errors.New("answer is not signed: no headers")
	}
	signer, err := verify(answer.Header, signed([]byte(subject), []byte(nonce), answer.Data))
	if err != nil {
		return "", fmt.Errorf("answer: %w", err)
	}
	return signer, nil
}

// MsgID is the Nats-Msg-Id of a register/deregister event.
func MsgID(peID string, seq uint64) string { return fmt.Sprintf("%s-%d", peID, seq) }

// RemovalReason is the reason a purge or delete marker of a scope's bucket
// gives, from its headers: Rsp-Reason; a marker the NATS server wrote when
// a record's TTL ran out (header Nats-Marker-Reason, records of older
// versions) is an expiry; a marker without either (written by a name
// server that did not name reasons yet) counts as a deregistration.
func RemovalReason(h nats.Header) string {
	switch r := h.Get(HeaderReason); r {
	case ReasonDeregistered, ReasonExpired, ReasonFailed, ReasonDisconnected:
		return r
	}
	if h.Get("Nats-Marker-Reason") != "" {
		return ReasonExpired
	}
	return ReasonDeregistered
}
