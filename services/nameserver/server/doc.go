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
package server
