// Package coordinationtest is an in-memory Consul for tests of the coordination packages: KV with
// blocking queries, sessions with TTL, behavior and lock-delay, and acquire/release. *Consul
// implements lock.Client and dynconfig.KV, so code under test runs unchanged against it, and it has
// no goroutines of its own, so it works inside a testing/synctest bubble: session expiry and
// lock-delay follow the bubble's fake clock.
//
// Start with New. Fault injection: SetError makes every call fail (an unreachable agent),
// InvalidateSession ends a session as a failed health check would, and Put, Delete and Get change
// and read KV directly, as an operator with the consul CLI would.
//
// Differences from Consul, on purpose: a session expires exactly at its TTL (Consul may wait up to
// twice the TTL), and a blocking query returns on any KV or session change, not only changes of the
// watched key (Consul may also return early; callers must handle it).
package coordinationtest
