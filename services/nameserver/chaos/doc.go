// Package chaos holds the chaos tests of rsp: a three-node JetStream
// cluster of embedded servers (nstest.StartCluster) with name-server
// replicas on it, whose NATS nodes and replicas are killed and restarted
// under load. Each test states its bound and stops by itself; -short
// makes the loads smaller.
//
// The fault tests of issue 14 (faults_test.go) run the scenarios of
// package clients/chaos, the same that `rsp chaos` runs: kill -9 of the
// node leading RSP_EVENTS, of the bucket's leader, of the JetStream meta
// leader and of a node PEs are connected to, and a 60 s outage of every
// name server, each at the default settings with 500 PEs (RSP_CHAOS_PES
// for another number) after the load alone (TestLoadAlone); each fails on
// any live PE lost, registration ended, failed resolution, killed PE not
// removed with reason disconnected or expired, or removal not published.
// -short skips them.
package chaos
