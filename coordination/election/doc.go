// Package election elects one leader among the instances of a service, on a Consul key held with a
// lock.Lock whose value is the leader's identity (or on etcd, through NewWith and package etcdsync).
//
// Start with New. As a lifecycle component, Start runs the campaign loop and Stop steps down when
// the service drains:
//
//	e, err := election.New(lock.NewConsulClient(client), "service/catalog/leader", instanceID,
//		election.WithOnElected(func(ctx context.Context, token lock.Token) {
//			runSingletonWork(ctx, token) // until ctx is cancelled; pass token to guarded writes
//		}))
//	lifecycle.Hook{Name: "election", Start: e.Start, Stop: e.Stop}
//
// On another engine, NewWith takes any Locker and Source, for example etcd's:
//
//	l, err := etcdsync.New(etcdClient, "/elections/catalog", etcdsync.WithValue([]byte(instanceID)))
//	e, err := election.NewWith(l, etcdsync.NewSource(etcdClient, "/elections/catalog"), opts...)
//
// By hand: Campaign blocks until elected, Lost says when leadership ended, Resign steps down.
// Leader reads the current leader with a consistent read; Observe (or NewObserver, for processes
// that do not campaign) follows it with consistent blocking queries.
//
// On Stop or Resign the elected function is cancelled and waited for before the key is released,
// so the old leader's work has stopped when a successor is elected (at once: an explicit release
// has no lock-delay). When leadership is lost instead (session invalidated, Consul unreachable for a
// TTL, key taken) a successor may already run while the old leader's function is still stopping:
// that is why the fencing token exists. See docs/coordination.md.
package election
