// Package dns discovers service instances through DNS: SRV records (Consul's DNS interface,
// "<service>.service.consul" on port 8600; a Kubernetes headless service,
// "_<port>._tcp.<svc>.<ns>.svc.cluster.local") or A and AAAA records with a configured port.
//
// Start with New and Resolver.Watch, which returns a discovery.Watcher with the semantics of the other
// backends (discovery/consul): immutable snapshots with increasing versions, one refresh loop per
// name in the process shared by every Watcher and stopped with the last one, NXDOMAIN and empty
// answers published as an empty list (not an error), and the last known good list kept, with Err set
// and Updated frozen (its age), while the servers fail (timeouts, SERVFAIL, REFUSED), with full-jitter
// backoff between retries.
//
// A name is asked again after the smallest TTL of the records of its last answer (for an empty answer,
// the SOA's negative-caching TTL), bounded by a floor and a ceiling (WithRefresh; DefaultMinRefresh,
// DefaultMaxRefresh). Consul answers with TTL 0 unless its dns_config.service_ttl is set, so against
// Consul the floor is the refresh interval. Queries go over UDP with EDNS0 and again over TCP when the
// answer is truncated, to the servers of WithServers or else those of /etc/resolv.conf. Only the
// records of the lowest SRV priority are used; SRV weights become Instance.Weight.
//
// DNS does not register anything: instances get into Consul's DNS through Consul registration
// (discovery/consul.Registrar), and into Kubernetes' through its endpoints. See docs/discovery.md,
// "DNS discovery", and discovery/dns/dnstest for a fake server.
package dns
