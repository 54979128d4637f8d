// Package health answers Kubernetes-style probes: /livez, /readyz and /startupz.
//
// Start with New, add checks with Add, and mount Handler for each Kind on the admin port. Checks run
// concurrently, each under its own timeout, and results are cached briefly (DefaultCacheTTL) so that a
// storm of probes costs one round of checks; concurrent probes share one evaluation. A failing critical
// check fails its probe; a failing non-critical one only marks it "degraded".
//
// The Checker also carries the process state that probes must reflect: Readiness answers 503 until
// MarkStarted and again from MarkDraining on, while liveness stays 200 during the drain, so that an
// orchestrator stops sending traffic without restarting the process.
//
// A Checker is safe for concurrent use.
package health
