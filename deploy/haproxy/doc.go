// Package haproxy renders an HAProxy configuration (haproxy.cfg.tmpl, committed beside it) that puts
// HAProxy in front of Chassis services registered in Consul, finding the instances through Consul's
// DNS interface with "resolvers" and "server-template" on SRV records.
//
// Start with Config.Write. The package's tests run the real thing (scripts/install-haproxy.sh): a
// Consul agent, three Chassis instances and HAProxy, and a rolling restart under open-loop load from
// a client that never retries, which must lose no request with the defaults. docs/discovery.md,
// "Edge router (HAProxy)", explains the timings: DRAIN_DELAY must cover deregistration, Consul's DNS
// TTL, HAProxy's re-resolution ("hold valid", "timeout resolve") and a margin.
package haproxy
