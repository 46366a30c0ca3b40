// Package chaos holds the chaos tests of rsp: a three-node JetStream
// cluster of embedded servers (nstest.StartCluster) with name-server
// replicas on it, whose NATS nodes and replicas are killed and restarted
// under load. Each test states its bound and stops by itself; -short
// makes the loads smaller.
package chaos
