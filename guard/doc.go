// Package guard protects a server from more work than it can do: a per-caller rate Limiter and an
// adaptive load Shedder, both as net/http middleware.
//
// Start with the two middlewares, outermost first, as Chassis wires them:
//
//	shed := guard.NewShedder(guard.DefaultShedConfig())
//	lim := guard.NewLimiter(guard.Rate{PerSecond: 100, Burst: 200},
//		guard.WithKeys(guard.KeyIP(&guard.ClientIP{Trusted: proxies})))
//	handler = shed.Middleware(lim.Middleware(mux))
//
// The Shedder keeps only as many requests in flight as the server completes at near-baseline
// latency and refuses the rest at once with 503 and Retry-After; routes marked critical are never
// shed and sheddable ones go first. The Limiter gives every caller (authenticated subject, verified
// API key or client address) its own token bucket, per route, answers 429 with Retry-After and the
// IETF RateLimit headers, and bounds the memory it spends on callers.
//
// Both read their settings from ShedConfig and RateLimitConfig, which carry envconfig tags; both
// count refusals with OpenTelemetry metrics (WithMeterProvider) and log each one with its reason
// (WithLogger). Neither starts a goroutine.
package guard
