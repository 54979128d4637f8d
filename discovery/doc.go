// Package discovery defines how Chassis finds the instances of a service: an Instance, an immutable
// Snapshot of the healthy instances, a blocking Watcher and a Registrar.
//
// Start with Static for a fixed list (for example from the environment), discovery/consul for a Consul
// registry, and discovery/lb to spread calls over the instances a Watcher reports. Watchers follow the
// style of Consul's blocking queries: Next(ctx, after) waits until there is something newer than the
// version the caller already has, so callers never poll.
package discovery
