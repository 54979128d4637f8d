// Package consul discovers and registers service instances with HashiCorp Consul.
//
// Start with NewClient over an *api.Client (ConfigFromEnv builds its config from the standard CONSUL_*
// variables), then:
//
//   - NewRegistry and Registry.Watch to follow a service: one blocking query of the health endpoint
//     (passing instances only) per distinct service and options in the process, shared by every
//     Watcher; stale reads by default; capped exponential backoff with full jitter on errors; Consul's
//     index rules (reset when it goes backwards, never 0); a minimum interval between queries so a
//     flapping index cannot spin; the last known good list kept, with its age, while Consul is down,
//     and kept for a grace period when an agent answers with no instances right after a reset (it may
//     have restarted without its state; WithResetGrace).
//   - NewRegistrar to announce this process once it is ready, with an HTTP check against its readiness
//     endpoint or a TTL check, and to keep the registration alive across agent restarts.
//
// The package talks to Consul only through the small Agent and Health interfaces, so tests use fakes
// (see discovery/discoverytest for a fake Consul HTTP API). docs/discovery.md describes the semantics,
// the consistency trade-off and the metrics.
package consul
