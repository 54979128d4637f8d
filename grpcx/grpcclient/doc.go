// Package grpcclient is Chassis' gRPC client: a *grpc.ClientConn to the instances of a named
// service, found through a discovery.Watcher and protected by the same policies, in the same
// order, as Chassis' HTTP clients. chassis.Service.GRPCClient builds one per dependency from
// CLIENT_<NAME>_* variables; use New directly outside a Service.
//
// Start with New, Start, Conn and Close:
//
//	c, _ := grpcclient.New("pricing", watcher, grpcclient.WithIdempotent("/shop.Pricing/Get"))
//	_ = c.Start()
//	defer c.Close()
//	prices := pricingpb.NewPricingClient(c.Conn())
//
// How it is built. The connection has its own resolver (grpc.WithResolvers, never registered
// globally) that follows the watcher, and Chassis' balancer (BalancerName, registered with grpc-go
// once, in init, because grpc-go has no per-connection balancer registry), which keeps one
// connection per instance. A unary call runs through, outer to inner:
//
//	span, rpc.client.call.duration, x-request-id and traceparent metadata
//	resilience: dependency breaker, overall timeout, retries under the budget, hedging
//	discovery/lb: a pick per attempt by the named policy (P2C peak-EWMA by default) among the
//	  connected instances, outlier ejection, instances already tried avoided
//	resilience: the instance's breaker, minimum attempt time, attempt timeout, bulkhead
//	the interceptors of WithInterceptors, then the connection, directed at the chosen instance
//
// The policies are those of package resilience and discovery/lb, not copies: an attempt's gRPC
// code is shown to them as an HTTP status (HTTPStatus; UNAVAILABLE 503, RESOURCE_EXHAUSTED 429
// with the server's pushback as Retry-After, ...), so the default classifier, RETRY_ON and
// resilience.WithClassifier decide for gRPC as they do for HTTP. Methods are retried after a
// failure the server may have seen, and hedged, only when idempotent (WithIdempotent, a proto
// idempotency_level, resilience.MarkRetryable); an attempt that was never sent goes elsewhere for
// any method. Streams are picked by the same balancer (their outcomes feed it) and instrumented,
// but not retried, hedged or timed out. docs/grpc.md#clients has the code table and the settings.
package grpcclient
