// Command ambassador is a local proxy for services in any language: a Chassis service, configured
// only by the environment, that forwards callers' requests to the instances discovery knows through
// the full client chain of svc.Client (balancer, breakers, retries under a budget, hedging,
// deadlines, telemetry), and registers a co-located service in Consul with a health check that
// goes through the ambassador. See docs/ambassador.md.
//
// Where to start: main.go wires it into chassis.Main; router.go routes and forwards (path prefix or
// Host, allow-list, the bounded wildcard, problem+json errors); catalog.go tells known services from
// unknown ones; local.go is the co-located service's readiness check and Consul registration.
//
//	AMBASSADOR_ROUTES=catalog,pricing DISCOVERY=consul ambassador
//	curl http://localhost:8080/catalog/items/42      # path prefix: GET /items/42 on a catalog instance
//	curl -H 'Host: pricing' http://localhost:8080/p/1 # Host: GET /p/1 on a pricing instance
//
// It gets every standard variable of a Chassis service (PORT, ADMIN_PORT, DRAIN_DELAY, CLIENT_<NAME>_*,
// OTEL_*, ...); its own are listed by `ambassador -help` and in docs/ambassador.md.
package main
