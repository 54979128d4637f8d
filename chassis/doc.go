// Package chassis gives a Go service the whole microservice platform through one constructor.
//
// Start with New and Run:
//
//	svc, err := chassis.New("catalog", chassis.WithConfig(&cfg))
//	if err != nil {
//		chassis.Exit(err) // prints every configuration problem, exits 2
//	}
//	svc.HandleFunc("GET /items/{id}", getItem)
//	chassis.Exit(svc.Run(context.Background()))
//
// or Main, which does the same and also answers -help with the environment reference.
//
// New reads the environment (Settings and the service's own config struct, reporting every problem
// at once), sets up logs, traces and metrics, the public and admin HTTP servers, health probes and
// the lifecycle. Run starts everything in order — telemetry, admin server, the service's start hooks,
// public server, startup checks, readiness, registration — and on SIGINT/SIGTERM or ctx cancellation
// stops it in reverse: readiness reports draining, the instance is deregistered, the server keeps
// serving for DRAIN_DELAY so that load balancers notice, then waits for in-flight requests, runs the
// stop hooks in reverse order and flushes telemetry, all under SHUTDOWN_TIMEOUT. A second signal exits
// at once.
//
// The admin port answers health probes and /metrics to everyone; its debug endpoints (pprof,
// /debug/loglevel, /debug/info, HandleAdmin routes) answer loopback peers only unless ADMIN_DEBUG and
// ADMIN_TOKEN say otherwise (docs/protection.md).
//
// chassis is the only package that wires the others; each of them is usable alone.
package chassis
