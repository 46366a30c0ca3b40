// Package local holds cluster.sh, which runs a three-node NATS cluster
// (JetStream, operator mode) with rsp name servers on this machine, and
// its end-to-end test. See the README, "Run on a cluster".
package local
