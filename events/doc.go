// Package events holds rsp's wire contract (docs/protocol.md):
// the names and their rules, the NATS subjects, the JSON bodies of every
// message, the nkey signatures that events and answers carry, and the
// checks of their NATS JWT chains (VerifyEventChain for events under JWT
// authorization, VerifyAnswerChain for answers).
//
// Everything another program needs to speak rsp is here; the name server and
// the client library both build on it, so there is one definition of each
// message.
package events
