// Package rspclient is the rsp client library: the pool element (PE) side
// registers with the name servers and keeps its registration alive, the pool
// user (PU) side resolves pool handles, watches pools and reports failed PEs.
//
// It speaks the wire protocol of docs/protocol.md (repository root) through
// the types of package events, over one *nats.Conn the caller owns.
//
// The shape follows nats.go's jetstream and micro packages (a small Client
// made with functional options) and etcd's clientv3 (a registration is a
// value that renews itself, like a lease, and a watch is a channel):
//
//	c, err := rspclient.New(nc, rspclient.WithKey(kp))
//	reg, err := c.Register(ctx, "echo", rspclient.PE{
//		Transports: []events.Transport{{Proto: "tcp", Addr: "10.0.0.1:7"}},
//	})
//	defer reg.Deregister(context.Background())
//
//	ans, err := c.Resolve(ctx, "echo", events.ResolveRequest{Max: 2})
//	changes, err := c.Watch(ctx, "echo")
//	cache, err := c.Cache(context.Background(), "echo")
//	pes := cache.Pick(2, nil)
//
// # Resolve or Cache
//
// A PU selects PEs in one of two ways (RFC 5351 allows both):
//
//   - Resolve asks a name server, one request-reply round trip per
//     selection (about 130 µs on a local NATS server, more across a
//     network). The policy runs on the name server, whose state (a
//     round-robin position, degradation counters) every PU served by that
//     replica shares, so their selections together spread over the pool
//     as the policy intends. The answer is signed and as fresh as the name
//     space, and the client keeps nothing. Use it for occasional
//     selections, small or short-lived PUs, and where server-side policy
//     state matters: a few PUs sharing a round robin, load-based policies
//     whose degradation counters should count every PU's selections.
//
//   - Cache keeps every member of the pool in memory (RFC 5352's ASAP
//     cache), from a watch of the pool, and PoolCache.Pick runs the same
//     policy code locally: no round trip (a few hundred ns for a 500-PE
//     pool, some 300 times less than Resolve on a local NATS server), and
//     selections go on while no name server answers. The cost is a
//     subscription and a copy of the pool per cache, changes a few
//     milliseconds late, and policy state per cache: many PUs each doing
//     their own round robin spread evenly only in aggregate, and a
//     degradation counter counts this PU's selections only.
//     PoolCache.ReportFailure drops a PE locally at once and reports it.
//     Like Watch, a cache trusts what it reads (the name-space bucket and
//     unsigned change notifications) on the strength of the NATS account's
//     permissions, where a Resolve answer carries a name server's signature.
//     Use it for PUs that select often (per request or per connection) or
//     must keep selecting through a name-server outage.
//
// # Watches and caches through faults
//
// Watch, Watcher and Cache follow a pool through its change notifications,
// plain NATS messages: the ones sent while the client's connection is down
// are lost. Renewals make no change notification, so a watch or a cache
// never sees a PE's lifetime run out by itself: a PE leaves when a name
// server announces its removal (deregistered, expired, failed,
// disconnected; a replica that starts after all were down announces the
// removals of the PEs that died meanwhile) or when the watch finds it gone
// by reading the pool from the name space again, a resync. A resync
// happens after the connection reconnects, when a name server of the
// scope starts or comes back (its beats on rsp.<scope>.nameservers.<id>
// tell; the pu role may subscribe to them), and every DefaultResync; it
// takes tens of milliseconds once the name space answers, and a failed one
// is tried again about every second until it succeeds. It delivers the
// difference: removals with the reason the bucket's purge marker names
// (header Rsp-Reason), adds and updates. Every read goes through the name
// servers (rsp.<scope>.read.<pool>, signed answers): a client touches no
// JetStream API but the publish of its events. A watch reports why it
// ended (Watcher.Err) and resumes from a revision (WithRevision,
// ErrCompacted when the name space never reached it). While a resync fails, a cache serves the members it
// has (PoolCache.SyncState tells since when): the name servers hold every
// lifetime while renewals cannot be stored, so those are the members the
// name space holds too.
//
// # Sessions and serving
//
// Client.NewSession and Client.Serve carry a PU's requests to PEs over
// NATS, with failover (RFC 5352's ASAP sessions, in spirit):
//
//	srv, err := pe.Serve(ctx, "echo", rspclient.PE{ID: "echo-1"}, handler)
//	defer srv.Drain(context.Background(), 30*time.Second)
//
//	s, err := pu.NewSession(ctx, "echo")
//	defer s.Close()
//	reply, err := s.Request(ctx, []byte("hi")) // reply.PEID answered
//
// A served PE listens on its service subject (rsp extension),
//
//	rsp.<scope>.svc.<pool>.<pe_id>   (events.ServiceSubject)
//
// registered as its transport {"proto": "nats", "subject": ...}; any
// "nats" transport works the same, and PEs of other languages serve by
// answering plain NATS requests on it. Requests and replies carry these
// headers (exact case):
//
//	Rsp-Session  request: the session's id, the same on every request
//	Rsp-Cookie   reply: the PE's state cookie for the session (text);
//	             request: the latest cookie the session got, from
//	             whichever PE, on every request once there is one
//	Rsp-Error    reply: the handler failed the request (the reason);
//	             the PE works, so the session does not fail over
//	Rsp-Check    request (events.HeaderCheck): a name server checks a
//	             reported PE; a Server answers it at once with an empty
//	             body, without the handler
//
// A session selects from a PoolCache with the pool's policy (no round trip
// per request) and stays with its PE while it answers, even after the PE
// deregistered: a draining PE (Server.Drain) keeps serving the sessions it
// has while no new session selects it. When the PE fails — no responders
// on its subject (the process is gone), no reply within the attempt
// timeout (it hangs), a refused TCP connection for Session.Dial — the
// session drops it from the cache, sends a signed failure report in the
// background, selects the next PE and tries again, with exponential
// backoff and jitter, within its session timeout: the application sees a
// reply, not the failure. The next PE gets the last cookie, so it can take
// the session's state over; what the cookie holds (and protecting it, e.g.
// sealing it) is the application's.
//
// A registration names the NATS connection it was sent over (its conn:
// server id and client id, taken at each send); after a reconnect it
// registers again at once, so name servers that take PEs out when their
// connection closes see the new connection before their grace period ends.
//
// # Registration state
//
// A Registration never gives up on a failure that retrying can mend: no
// name server answers, the event stream elects a leader, the connection
// is down. It keeps renewing, with exponential backoff and jitter (at
// most min(2 s, lifetime/4) apart, each attempt bounded by the client's
// timeout and a third of a lifetime; a renewal the event stream stored
// but no name server answered yet keeps the pace of a third of a
// lifetime, without backoff), for as long as the outage lasts, and is
// registered again as soon as one renewal gets through. Its State says
// how it stands, and StateChanged delivers each change (as nats.go's
// StatusChanged does for a connection):
//
//	Registered  the last registration or renewal was accepted
//	Retrying    renewals fail; the lifetime has not run out: still in the name space
//	Lost        renewals failed until the lifetime ran out: name servers may have
//	            taken the PE out (not while they could not store renewals);
//	            registering again
//	Ended       Done is closed: Deregister, a refusal retrying cannot change
//	            (IsPermanent: bad_request, forbidden, conflict, bad input), or
//	            the client's connection closed; Err says which
//
// The client's logger says so too: a warning when renewals begin to fail
// and when the lifetime ran out, an info line when the PE is registered
// again (each retry at debug level only).
//
//	for sc := range reg.StateChanged() {
//		log.Printf("%s: %s (%v)", reg.ID(), sc.State, sc.Err)
//	}
//
// Register itself returns once the first registration is accepted, or an
// error within the client's timeout; a PE that must come up during an
// outage calls it again, with the same PE id, through Client.KeepTrying
// (rsp register and services/echo do):
//
//	pe.ID = "echo-1" // the same id for every attempt
//	err := c.KeepTrying(ctx, "register", func(ctx context.Context) error {
//		reg, err = c.Register(ctx, "echo", pe)
//		return err
//	}, nil)
//
// Losing a NATS server: give the connection every server of the cluster
// (natsconn.Dial takes a comma-separated list; nats.go also learns the
// cluster's other servers from the one it reaches). It then moves to
// another server with backoff, a registration registers again over the
// new connection and renews on, and Resolve sends a request again when
// the name server that took it died with it (no answer within a second)
// or none answered, a few times within the client's timeout.
//
// Every event the client sends is signed with its nkey (events.SignEvent);
// every resolution answer must carry a valid signature over the request's
// nonce (events.VerifyAnswer), or it is refused.
//
// Security by default: with WithCreds (a NATS .creds file, as `rsp auth`
// writes them) the client signs with the file's user nkey and sends its
// user JWT in Rsp-Jwt with every event, as name servers with JWT
// authorization require, and it trusts only answers of name servers whose
// own JWT (tag rsp-role:nameserver) comes from the same account signing key
// as its own, or from a key given with WithNameServerKeys
// (events.VerifyAnswerChain). The library does not connect: the caller
// connects with the same file and the user's own inbox prefix
// (events.InboxPrefix: a pe or pu user may receive replies there only)
// and passes the connection,
//
//	nc, err := nats.Connect(url, natsconn.Creds(path))
//	c, err := rspclient.New(nc, rspclient.WithCreds(path))
//
// Without creds (insecure mode, a server without authorization) events
// carry no JWT and any correctly signed answer is taken, unless
// WithNameServerKeys names the name servers to trust.
package rspclient
