// Package chassistest runs chassis services inside `go test`, with in-memory fakes for everything
// around them, and injects faults between them.
//
// Start with Start: it builds a *chassis.Service from a name and the same setup function main
// passes to chassis.Main, runs it on 127.0.0.1 with ephemeral ports, waits until it is ready and
// stops it when the test ends, failing the test if goroutines leak. The service reads its
// configuration from a map (WithEnv) instead of the process environment, records its spans, metrics
// and logs in memory (Instance.Spans, Instance.AssertSpan, Instance.HistogramCount, Instance.Logs),
// and finds other services through an in-memory registry.
//
//	inst := chassistest.Start(t, "catalog", setup, chassistest.WithEnv(map[string]string{"GREETING": "hi"}))
//	res, body := inst.Get(t, "/items/42")
//
// For several services that call each other, use a Cluster: every service started in it registers
// in the cluster's registry, so svc.Client("pricing") in one finds the others. Faults go on the links
// between them (Cluster.Link(from, to).Set(fault)) or cut them (Cluster.Partition, Cluster.Heal).
// Faults are values (Latency, Fail, Reset, Blackhole, Unreachable, Sometimes, Script, Chain) that a
// FaultTransport applies to the requests of an http.Client, and a Proxy to the requests it relays
// over a real TCP connection.
//
// Tests where time matters run in a testing/synctest bubble. Real sockets keep synctest's clock
// from advancing, so start such services with InMemory: requests made through Instance.Client (or
// Get, Do) and the calls between services then run the handlers in memory, without sockets, and a
// "dependency times out after 1 s" scenario takes milliseconds. Start the services before entering the
// bubble, and make the requests inside it.
//
// Everything in this package is safe for concurrent use unless a comment says otherwise.
package chassistest
