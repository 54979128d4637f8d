// Package lb spreads calls over the instances of a service and steers around bad ones.
//
// Start with New, which follows a discovery.Watcher, or NewFixed for a fixed list; then either wrap
// the Balancer in a Transport (an http.RoundTripper for URLs like http://<service>/path) or call Pick
// and report each call with Endpoint.Done:
//
//	b, err := lb.New("pricing", watcher)    // P2C with peak-EWMA latency by default
//	if err != nil { ... }
//	if err := b.Start(); err != nil { ... }  // or run b.Run(ctx) in a run group
//	defer b.Close()
//	client := &http.Client{Transport: lb.NewTransport(b)}
//	resp, err := client.Get("http://pricing/prices/42")
//
// Policies are registered by name (Register, gRPC's Builder/Picker manner): P2C (default), RoundRobin,
// Random, LeastRequest and RingHash (key from WithHashKey) are built in, one file each; WithPolicy
// selects one. Picks read an immutable Table through an atomic pointer, never block and allocate
// nothing; every snapshot and every change of ejection state publishes a new Table and Picker. Outlier ejection and panic mode
// follow Envoy (see Outlier). WithInstancePolicy (or WithInstanceTransport and WithClassifier) is
// where per-instance circuit breakers, timeouts and bulkheads plug in, through the contracts declared
// in package discovery (InstanceTransport, Classifier, TriedRoundTripper).
//
// docs/lb.md explains each policy, the defaults, and when to choose which.
package lb
