// Command cart keeps the demo shop's carts in memory; callers route each user to one instance with
// a ring hash. It is configured only through its environment; run it with -help for every variable.
//
//	PORT=8083 ADMIN_PORT=9093 go run ./examples/shop/cart
//	curl -X POST localhost:8083/carts/alice/items -H 'Content-Type: application/json' -d '{"product_id":"p-001","quantity":1}'
package main

import (
	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/examples/shop/internal/cart"
)

func main() {
	var cfg cart.Config
	chassis.Main(cart.Name, cart.Setup(&cfg), cart.Options(&cfg)...)
}
