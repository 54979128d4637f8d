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
// New reads the environment and reports every problem at once, whatever its group: Settings, the
// service's own config structs, OTEL_*, CONSUL_* and the CLIENT_<NAME>_* and DISCOVERY_STATIC_<NAME>
// variables present. Dependencies are declared with Client after New, so Run checks them before
// anything starts: a declared dependency with a bad setting, no instance list, or a misspelt variable
// (CLIENT_PRICNG_TIMEOUT while CLIENT_PRICING_TIMEOUT is unset) fails Run with one *config.Error
// (exit code 2 through Exit), each problem once under its full name; other CLIENT_* and
// DISCOVERY_STATIC_* variables that nothing reads are logged as a warning. New also sets up logs, traces and metrics, the public and admin HTTP servers, health probes and
// the lifecycle. Run starts everything in order — telemetry, admin server, the service's start hooks,
// public server, startup checks, readiness, registration — and on SIGINT/SIGTERM or ctx cancellation
// stops it in reverse: readiness reports draining, the instance is deregistered, the server keeps
// serving for DRAIN_DELAY so that load balancers notice, then waits for in-flight requests, runs the
// stop hooks in reverse order and flushes telemetry, all under SHUTDOWN_TIMEOUT. A second signal exits
// at once.
//
// Admin processes (twelve-factor XII): Task registers a one-off task, such as a migration or a
// re-index, beside the routes. Main runs `./service TASK [ARGS...]` with RunTask instead of Run: the
// same configuration, telemetry and clients (with discovery), but no port opened, no registration
// and no start hooks; the task's error is the exit code (see Exit), an unknown task exits 2 with the
// list, -help lists the tasks, and SIGINT/SIGTERM cancel the task's context. docs/operations.md
// describes the deployment side.
//
// gRPC is the second transport of the same Service: register services on svc.GRPC() before Run,
// and Run serves them on GRPC_PORT with the chain of package grpcx (the HTTP chain's stages, in its
// order), a grpc.health.v1 service that mirrors readiness, and the same drain (docs/grpc.md). A
// service that never calls GRPC opens no gRPC port.
//
// The admin port answers health probes and /metrics to everyone; its debug endpoints (pprof,
// /debug/loglevel, /debug/info, HandleAdmin routes) answer loopback peers only unless ADMIN_DEBUG and
// ADMIN_TOKEN say otherwise (docs/protection.md).
//
// chassis is the only package that wires the others; each of them is usable alone.
package chassis
