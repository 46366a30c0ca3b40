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
//   - expiry: the replicas remove a PE whose lifetime ran out (reason
//     "expired"), counting lifetimes only while renewals can be stored:
//     through an election of the stream's or the bucket's leader, a lost
//     node or a name-server outage every PE keeps its place, and gets a
//     fresh lifetime from the end of the outage (expiry.go).
//   - failure detection: disconnects and failure reports take a PE out
//     before its lifetime ends (below).
//
// # Failure detection
//
// A PE leaves the name space in four ways: it deregisters
// ("deregistered"), its lifetime runs out ("expired"), its NATS
// connection closes ("disconnected"), or it is reported failed
// ("failed").
//
// Disconnects. A registration names the NATS connection it came over
// (events.Conn: server id and client id), and the record keeps it; the
// view indexes the live PEs by connection. When a client connection
// closes, for whatever reason (process killed, socket reset, Close
// without deregistering), the NATS server it was on publishes a
// client_disconnect advisory on $SYS.ACCOUNT.<account>.DISCONNECT, within
// milliseconds (~1-2 ms after a kill -9). The system account exports that
// stream with the account in token 3 and each scope account imports its
// own (package auth sets both up), so a replica with a JWT identity
// (operator mode) subscribes to its account's subject, in queue group
// rsp-nameservers: one replica takes each advisory. It waits
// Config.DisconnectGrace (default 250 ms), then asks at once for
// appliedUpTo (expiry.go) and waits, asking every 100 ms for at most
// 30 s, until it is not before the end of the grace, so that the events
// stored within the grace are applied; then it removes every PE whose
// record still names that connection: a purge with compare-and-set on the
// revision it read (retried with backoff for about 20 s), a remove change
// with reason "disconnected" and the element, a log line. A PE whose
// client reconnected and registered again within the grace names its new
// connection and stays, even when the name servers are behind. While the
// replica holds lifetimes, the PEs wait first for the hold to end (at
// most 30 s) and get the grace again from then. Connections a
// server closes because it shuts down are ignored (their clients move to
// another server and register again).
//
// This signal comes from the server that held the connection, costs no
// polling and no traffic while nothing happens, and arrives in
// milliseconds, where lifetimes are seconds: a crashed PE is gone from
// resolution after about the grace period. It does not see what keeps a
// TCP connection open: a hung process, or a host or network that died
// without closing the socket, is noticed by the NATS server's pings only
// after minutes (PingInterval × MaxPingsOut), and the registration
// lifetime covers it. Insecure mode (no accounts, no JWT
// identity) has no account to import the advisories into: there only the
// lifetime (and failure reports) apply. An advisory missed (a replica that
// dies in the grace, an overflow of pending disconnects) also leaves the
// PE to its lifetime.
//
// Failure reports. A PU that finds a PE failed publishes a signed report
// (rsp.<scope>.failure.<pool>); the reporter is its signer. Reports go
// through RSP_EVENTS like the other events, so one replica handles each,
// and they are counted in the key-value bucket rsp_<scope>_reports, key
// <pool>.<pe_id>, whose value maps each reporter to the time of its last
// report (events.Reports); it is updated with compare-and-set, and each
// write sets the key's TTL to the report window, so replicas count
// together and the reports of a PE nobody reports go away. Reports older
// than the window are dropped; a reporter counts once however often it
// reports; reports about PEs the view does not know are ignored (logged
// at debug). Once MaxBadPEReports distinct reporters (default 3) reported
// a PE within ReportWindow (default 10 s), both per scope
// (Config.ScopeReports), the PE is removed with reason "failed" and its
// reports forgotten. One reporter can thus never take out a PE; in
// insecure mode, where anyone can make new keys, neither are reporters
// scarce.
//
// The replica may also check a reported PE itself (unless Config.NoChecks):
// a request with header Rsp-Check and an empty body to a nats transport
// (no responders, or no answer within Config.CheckTimeout, default 500 ms,
// is a failure), or a TCP connect to a tcp transport (same timeout). Only
// nats transports on the pool's service subjects (rsp.<scope>.svc.<pool>.>,
// where pe users may serve) are requested: the name server may publish
// anywhere in its account, and a PE must not aim it at, say, the
// JetStream API. Up to four transports are tried in order until one
// passes. If all fail, the PE is removed at once (reason "failed"); if
// one passes, the report only counts. Checks run in the background, at
// most one per PE per second and at most eight at a time per replica (a
// report beyond that only counts), so a flood of reports cannot turn the
// name servers into a traffic source; the same registration must still
// be in place when a failed check removes it.
//
// # Replication
//
// Nothing in rsp is kept by one machine alone. The stream RSP_EVENTS and
// the buckets (rsp_<scope>, rsp_<scope>_reports, rsp_auth) are replicated
// by JetStream over the NATS cluster: Config.Replicas 0 (auto, the
// default) creates them with min(MaxAutoReplicas, JetStream servers)
// replicas — R1 on a single server, R3 on a cluster of three or more; the
// cluster itself says how many it can place — and leaves the replicas of
// existing ones alone; an explicit value (1 to 5) also scales existing
// ones. The shared durable consumers inherit the stream's replicas. So
// with R3 any one NATS node can die: the stream and buckets keep a quorum,
// their leaders (and the JetStream meta leader) move to the other nodes
// within a second or so when a node shuts down, and a node that comes back
// catches up from its peers.
//
// What is acknowledged survives. A publisher gets its PubAck once the
// event is stored by a quorum of the stream's replicas; a replica
// acknowledges an event to the stream only after applying it. Each event
// takes effect once: the stream drops a second copy with the same
// Nats-Msg-Id within the duplicates window (2 min); the record and purge
// marker an event writes carry its stream sequence (header Rsp-Event-Seq),
// so an event delivered again after its ack was lost — a replica died, a
// consumer leader changed, in which case JetStream may even count it as
// a first delivery — finds its own mark and is accepted again (and its
// change announced again under the same revision) without a second
// write, while a replay of the same signed event, a new stream message, is
// refused as stale. A removal (any reason) leaves a tombstone in its
// purge marker (events.Tombstone: owner, last seq), kept for
// Config.TombstoneLife (2 × ClockSkew + 1 min): until then another
// signer's registration of the PE id is refused forbidden and the owner's
// must carry a higher seq, so no replayed event, under any message id,
// brings a removed PE back; after it the clock skew refuses any event
// accepted before the removal. Creates and updates are compare-and-set on the key's
// revision (a lost race, API error 10071, or 10164 on replicated streams,
// is retried), so a retried write cannot apply twice either.
//
// A replica survives the loss of its NATS server. Its connection (package
// natsconn) reconnects to another server of its URL list, and to servers
// the cluster announces, with backoff and jitter; core subscriptions
// (resolution, disconnect advisories) follow it by themselves. Each
// Consume of a shared consumer pulls again after a reconnect, a leader
// change or two missed heartbeats (pulls carry a 1 s heartbeat), and is
// supervised: one that ends (its consumer was deleted) or keeps failing
// for 5 s without a message is replaced, the consumer created again if it
// is gone. The key-value watches (the view's, the account JWT's) are
// supervised too: one that ends, or that a probe of the store every
// second finds behind twice in a row, is started again with backoff, and
// the view re-synced from its initial values (keys that are gone from
// the store leave it). Setting up retries JetStream API requests that get
// no answer or find no meta leader yet, within Config.StartTimeout.
//
// Name-server replicas are equals: while any one of them runs, resolution
// answers and events are applied; what a replica held when it died goes
// to another after AckWait. Resolutions in flight at a replica that dies
// are lost: clients retry them (the client library's Resolve is one
// request; a session retries with backoff).
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
