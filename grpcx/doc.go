// Package grpcx is the server side of gRPC as Chassis' second transport: the interceptor chain,
// the health service and the server's configuration. chassis.Service.GRPC wires them from the
// environment; use this package directly to build a gRPC server outside chassis.
//
// Start with NewInterceptors and ServerConfig.ServerOptions:
//
//	chain, err := grpcx.NewInterceptors(grpcx.WithShedder(shedder), grpcx.WithVerifier(verifier, false))
//	srv := grpc.NewServer(append(grpcx.DefaultConfig().ServerOptions(),
//		grpc.ChainUnaryInterceptor(chain.Unary()), grpc.ChainStreamInterceptor(chain.Stream()))...)
//	grpcx.NewHealth(ready).Register(srv)
//
// The chain runs the HTTP chain's stages in the same order (Interceptors), answering with gRPC codes:
//
//	panic                          INTERNAL "internal error" (logged with the stack; serving goes on)
//	shed (overload)                UNAVAILABLE + google.rpc.RetryInfo + grpc-retry-pushback-ms
//	no / bad bearer token          UNAUTHENTICATED "missing bearer token" / "invalid bearer token"
//	missing scope                  PERMISSION_DENIED "insufficient scope"
//	rate limited                   RESOURCE_EXHAUSTED + google.rpc.RetryInfo + grpc-retry-pushback-ms
//	message over GRPC_MAX_*_BYTES  RESOURCE_EXHAUSTED (grpc-go's own check)
//	past the deadline              DEADLINE_EXCEEDED (the caller's deadline, capped by RequestTimeout)
//
// Health mirrors a readiness function over grpc.health.v1 (Check, Watch, List), so that Kubernetes'
// gRPC probes and grpc-health-probe see what /readyz says. An instance advertises its gRPC port in
// Consul as the service metadata MetaPort ("grpc_port").
//
// Everything here is safe for concurrent use.
package grpcx
