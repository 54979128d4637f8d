// Package gateway is the shop's public API: it authenticates and rate-limits callers, and answers
// from catalog, pricing and cart, which it finds through discovery.
//
// Start with New; cmd main passes its Setup and Options to chassis.Main:
//
//	g := gateway.New()
//	chassis.Main(gateway.Name, g.Setup, g.Options()...)
//
// Routes:
//
//	GET  /products             catalog's list, priced in one batch call to pricing
//	GET  /products/{id}        catalog and pricing, called concurrently
//	GET  /cart/{user}          the user's cart
//	POST /cart/{user}/items    add {"product_id": "p-001", "quantity": 1}
//
// Calls to cart are routed by a ring hash on the user id (lb.RingHash with lb.WithHashKey), so that a
// user's cart stays on one cart instance while the set of instances is stable. When pricing fails or
// takes longer than GATEWAY_PRICING_TIMEOUT, products are answered without a price (price_unavailable,
// X-Degraded: pricing) unless GATEWAY_PRICING_FALLBACK=false: a shop that shows a product without its
// price for a moment beats one that shows an error page.
//
// Authentication (AUTH_JWKS_URL or AUTH_JWKS_FILE) and per-caller rate limiting (RATE_LIMIT_RPS,
// RATE_LIMIT_ROUTES) are chassis settings, off unless configured; chassis puts them in front of
// every route. With authentication on, a cart can only be read and written by the user it belongs
// to (the token's subject).
//
// Every response carries X-Served-By: this instance and the upstream instances that answered.
package gateway
