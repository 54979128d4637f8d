// Package catalog is the shop's product catalog: a fixed list of products, served read-only.
//
// Start with Setup and Options, which cmd main passes to chassis.Main:
//
//	var cfg catalog.Config
//	chassis.Main("catalog", catalog.Setup(&cfg), catalog.Options(&cfg)...)
//
// Routes: GET /products (the list, optionally ?category=) and GET /products/{id} (404 for an unknown
// id). Responses carry an ETag and Cache-Control, so a caching client revalidates cheaply.
package catalog
