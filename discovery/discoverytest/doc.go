// Package discoverytest provides fakes for testing code that uses discovery, discovery/consul and
// discovery/etcd.
//
// Start with NewRegistry for an in-memory registry: its Watcher and Registrar implement the discovery
// interfaces, and Set, Add, Remove and Fail drive them from the test. It is the fake for both
// engines: code written against discovery.Watcher and discovery.Registrar is tested with it whether
// production runs Consul or etcd, and needs neither binary. For code that talks to Consul
// over HTTP, Consul is a fake of the Consul HTTP API (agent service registration and checks, the health
// endpoint with real blocking queries, catalog services, KV with CAS and sessions) with fault
// injection: SetFailure, SetLatency and ResetIndex, and WaitBlocked, which returns once a test's
// blocking query has reached the fake and waits (so the change made next wakes it). Serve it with httptest.NewServer, or use Server,
// which listens on a loopback address and can Pause (connection refused) and Resume, and which the
// demo launcher runs as its registry.
package discoverytest
