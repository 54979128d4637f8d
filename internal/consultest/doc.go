// Package consultest runs real Consul agents for integration tests: a dev agent (StartDev) or a
// cluster of servers (StartCluster) on free loopback ports, with helpers to kill, restart and find the
// leader, and a TCP Proxy to cut an agent off and count what clients send meanwhile. Everything is
// stopped in t.Cleanup; the agents' logs live under t.TempDir and their tail is printed when a test
// fails.
//
// The consul binary comes from PATH or $(go env GOPATH)/bin; scripts/install-consul.sh installs it.
// A missing binary fails the test (it does not skip): the test command installs it first. The
// helpers take a TB, which testing.TB satisfies, so that an example can start a cluster too.
package consultest

// TB is the part of testing.TB the helpers use. *testing.T and *testing.B satisfy it; so can a
// command that runs agents outside a test (examples/cap), with a Fatal that stops the command.
type TB interface {
	Helper()
	Cleanup(f func())
	TempDir() string
	Failed() bool
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}
