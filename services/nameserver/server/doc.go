// Package server is the rsp name server: a stateless replica that keeps the
// name space of one or more scopes.
//
// All state lives in JetStream, so any number of replicas can run side by
// side on the same NATS and share the work:
//   - registrar: events (register, deregister, failure) come from the stream
//     RSP_EVENTS through one durable consumer per scope that all replicas
//     share; each event is applied to the scope's key-value bucket with
//     compare-and-set, and its outcome and pool change are published.
//   - view: each replica watches the whole bucket and keeps an in-memory
//     view of every pool, from which resolutions are answered.
//   - resolver: resolution requests arrive in the queue group
//     rsp-nameservers; one replica answers each from its view, signed.
//   - expiry: the bucket's per-key TTL removes a PE whose lifetime ran out
//     even while no name server runs; the server's MaxAge marker reaches one
//     replica through a shared consumer on the bucket's stream, which
//     publishes the remove change with reason "expired".
//
// # Security
//
// Every event must carry a valid signature of its signer (Rsp-Signer,
// Rsp-Signature), and a PE id belongs to the first signer that registered
// it. Answers are signed with Config.Key over the request's subject and
// nonce; with Config.JWT (the replica's own user JWT, whose subject is
// Key) they also carry it in Rsp-Jwt, so that clients can check that the
// answer comes from a name server of their account.
//
// With Config.Auth the replica also applies JWT authorization: every event
// (register, deregister, failure report) goes through
// events.VerifyEventChain against the scope's account JWT: Rsp-Jwt must be
// an unexpired, unrevoked user JWT issued by the account or one of its
// signing keys, naming Rsp-Signer, whose publish permissions allow the
// event's subject. A refused event gets the outcome "forbidden" with the
// reason, and a Warn log line (signer, subject, reason); a refused failure
// report is logged only.
//
// The scope's account is the issuer account of Config.JWT. Its account JWT
// comes from Config.Auth.AccountJWT and from the key-value bucket rsp_auth
// (History 1, created if missing, key = scope name) in the same account;
// the replica watches the key and uses the newest valid JWT (by issue time)
// whose subject is the account and whose issuer is an operator key (one of
// Config.Auth.Operators when set). So `rsp auth revoke`, which writes the
// updated account JWT there, takes effect at the next event, without a
// restart. A Config.Auth.AccountJWT that the bucket lacks is written to it
// for other replicas. When neither place holds a usable account JWT, Start
// fails and says so. Without Config.Auth (insecure mode), Rsp-Jwt is
// ignored and only signatures are checked.
//
// Set Config.Auth.Operators in production: without it, anyone who may write
// to rsp_auth could install an account JWT of their own making.
package server
