// Package etcdtest runs real etcd members for integration tests: a single member (Start) or a
// cluster (StartCluster) on free loopback ports, with helpers to kill and restart a member, find the
// leader, and cut a member off from its peers (StartPartitionableCluster, Cluster.Isolate) while its
// clients still reach it. Everything is stopped in t.Cleanup; each member's log lives under a
// temporary directory and its tail is printed when a test fails.
//
// The etcd binary comes from PATH or $(go env GOPATH)/bin; scripts/install-etcd.sh builds it from
// the Go module proxy. A missing binary fails the test (it does not skip): the test command installs
// it first. The helpers take consultest.TB, which testing.TB satisfies.
//
// The harness talks to members through etcd's HTTP gateway (/health, /v3/maintenance/status), not
// through clientv3, so that it tests the client code under test and nothing else.
package etcdtest
