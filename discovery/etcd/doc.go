// Package etcd discovers and registers service instances with etcd, behind the same
// discovery.Watcher and discovery.Registrar interfaces as discovery/consul.
//
// Start with a *clientv3.Client (Settings.ClientConfig builds its configuration from ETCD_ENDPOINTS
// and etcdctl's TLS and auth variables), then:
//
//   - NewRegistry and Registry.Watch to follow a service: one prefix watch per service in the process,
//     shared and reference-counted by every Watcher. A watch lists the prefix (revision R), publishes
//     the list and watches from R+1; it keeps the last known good list, with its age
//     (Snapshot.Updated) and the reason (Snapshot.Err), while etcd fails, lists again at once when the
//     revision it follows was compacted, and otherwise starts over with capped, jittered backoff. An
//     idle watch asks for a progress notification every DefaultProgressInterval: clientv3 reconnects a
//     broken stream silently, and two intervals without an answer count as a failure.
//   - NewRegistrar to announce this process once it is ready: the instance is written under a lease
//     (DefaultLeaseTTL) that the client keeps alive. Health is the lease: a dead process is gone within
//     the TTL; Deregister revokes the lease (the key goes at once); a lost lease (etcd restarted or
//     unreachable for a TTL, a healed partition) is replaced and the instance written again.
//
// The key layout is <prefix>/services/<name>/<id> → JSON instance (see ServiceKey); Linearizable and
// Serializable are the CAP choice of the watches (WithConsistency). Tests of code written against
// discovery.Watcher or discovery.Registrar need no etcd: discovery/discoverytest's in-memory Registry
// is the fake for both engines. docs/discovery.md compares etcd with Consul.
package etcd
