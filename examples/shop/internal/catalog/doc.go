// Package catalog is the shop's product catalog: a fixed list of products, served read-only.
//
// Start with Setup and Options, which cmd main passes to chassis.Main:
//
//	var cfg catalog.Config
//	chassis.Main("catalog", catalog.Setup(&cfg), catalog.Options(&cfg)...)
//
// Routes: GET /products (the list, optionally ?category=) and GET /products/{id} (404 for an unknown
// id). Responses carry an ETag and Cache-Control, so a caching client revalidates cheaply.
//
// Admin task (twelve-factor XII): `catalog reindex [-out FILE] [CATEGORY...]` rebuilds the price
// index by category, asking pricing for the prices, with the catalog's configuration and without
// serving (see Reindex and docs/operations.md#admin-tasks).
package catalog
