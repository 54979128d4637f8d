// Package guard protects a server from more work than it can do: a per-caller rate Limiter, an
// adaptive load Shedder and a BodyGate that reads request bodies before admission, all as net/http
// middleware.
//
// Start with the two middlewares, outermost first, as Chassis wires them:
//
//	shed, err := guard.NewShedder(guard.DefaultShedConfig())
//	...
//	lim, err := guard.NewLimiter(guard.Rate{PerSecond: 100, Burst: 200},
//		guard.WithKeys(guard.KeyIP(&guard.ClientIP{Trusted: proxies})))
//	...
//	bodies, err := guard.NewBodyGate(guard.BodyConfig{MaxTime: srv.ReadTimeout})
//	...
//	handler = bodies.Middleware(shed.Middleware(lim.Middleware(mux)))
//
// The Shedder keeps only as many requests in flight as the server completes at near-baseline
// latency and refuses the rest at once with 503 and Retry-After; routes marked critical are never
// shed and sheddable ones go first. The Limiter gives every caller (authenticated subject, verified
// API key or client address) its own token bucket, per route, answers 429 with Retry-After and the
// IETF RateLimit headers, and bounds the memory it spends on callers.
//
// The BodyGate reads bodies up to a size before the Shedder sees the request, under a minimum rate
// enforced with the connection's read deadline, so that waiting on a slow client's bytes is
// neither a Shedder slot nor server latency (408 for a body below the rate, 429 beyond a number of
// bodies in progress per client).
//
// Servers other than net/http use the same Shedder and Limiter through Shedder.AcquireRPC and
// Limiter.AllowRPC (package grpcx's gRPC chain does): the same admission, buckets per route (the
// full method name), metrics, logs and span events, with rpc.method in place of http.route.
//
// The Shedder and Limiter read their settings from ShedConfig and RateLimitConfig, which carry
// envconfig tags. All three count refusals with OpenTelemetry metrics (WithMeterProvider), log each
// one with its reason (WithLogger), and the Shedder and Limiter add a span event (chassis.shed,
// chassis.rate_limited) to the refused request's span when it is recording. A constructor fails only
// when the meter provider refuses an instrument. None starts a goroutine.
package guard
