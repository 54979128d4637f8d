// Command pricing serves the demo shop's prices, with optional fault-injection knobs
// (CHAOS_ENABLED=true). It is configured only through its environment; run it with -help for every
// variable.
//
//	PORT=8082 ADMIN_PORT=9092 CHAOS_ENABLED=true go run ./examples/shop/pricing
//	curl localhost:8082/prices/p-001
//	curl -X PUT localhost:8082/chaos -d '{"latency":"300ms","latency_rate":0.1}'
package main

import (
	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/examples/shop/internal/pricing"
)

func main() {
	var cfg pricing.Config
	chassis.Main(pricing.Name, pricing.Setup(&cfg), pricing.Options(&cfg)...)
}
