// Command catalog serves the demo shop's product list. It is configured only through its
// environment; run it with -help for every variable.
//
//	PORT=8081 ADMIN_PORT=9091 go run ./examples/shop/catalog
//	curl localhost:8081/products/p-001
package main

import (
	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/examples/shop/internal/catalog"
)

func main() {
	var cfg catalog.Config
	chassis.Main(catalog.Name, catalog.Setup(&cfg), catalog.Options(&cfg)...)
}
