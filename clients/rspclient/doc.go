// Package rspclient is the rsp client library: the pool element (PE) side
// registers with the name servers and keeps its registration alive, the pool
// user (PU) side resolves pool handles, watches pools and reports failed PEs.
//
// It speaks the wire protocol of ../../../shared/design/protocol.md through
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
// connects with the same file and passes the connection,
//
//	nc, err := nats.Connect(url, nats.UserCredentials(path))
//	c, err := rspclient.New(nc, rspclient.WithCreds(path))
//
// Without creds (insecure mode, a server without authorization) events
// carry no JWT and any correctly signed answer is taken, unless
// WithNameServerKeys names the name servers to trust.
package rspclient
