// Command gateway is the demo shop's public API in front of catalog, pricing and cart, which it
// finds through discovery (DISCOVERY=consul, or DISCOVERY_STATIC_CATALOG=host:port,... and so on).
// It is configured only through its environment; run it with -help for every variable.
//
//	DISCOVERY_STATIC_CATALOG=127.0.0.1:8081 DISCOVERY_STATIC_PRICING=127.0.0.1:8082 \
//	DISCOVERY_STATIC_CART=127.0.0.1:8083 go run ./examples/shop/gateway
//	curl localhost:8080/products/p-001
package main

import (
	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/examples/shop/internal/gateway"
)

func main() {
	g := gateway.New()
	chassis.Main(gateway.Name, g.Setup, g.Options()...)
}
