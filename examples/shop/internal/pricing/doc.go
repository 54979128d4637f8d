// Package pricing is the shop's price service, with fault-injection knobs for the demo.
//
// Start with Setup and Options, which cmd main passes to chassis.Main:
//
//	var cfg pricing.Config
//	chassis.Main("pricing", pricing.Setup(&cfg), pricing.Options(&cfg)...)
//
// Routes: GET /prices/{id} and GET /prices?ids=a,b,c (at most MaxBatch ids). Prices are derived from
// the product id, so every instance answers the same without shared state.
//
// With CHAOS_ENABLED=true the service also serves /chaos, which injects faults into the price routes
// of this instance only: GET shows the current Faults, PUT sets them (JSON, see Faults), DELETE
// clears them. With CHAOS_TOKEN set, /chaos requires "Authorization: Bearer <token>". The knobs are
// public routes on purpose: the admin port belongs to the chassis, and a demo needs to reach them
// the same way it reaches the service. Never enable them in production.
package pricing
