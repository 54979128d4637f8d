// Package lock implements a distributed lock on a Consul key, held through a session with a TTL and
// lock-delay, with a fencing token for guarded writes and a Lost signal.
//
// Start with New and Acquire; pass the token to every write the lock guards, and stop when Lost is
// closed:
//
//	l, err := lock.New(lock.NewConsulClient(client), "service/jobs/compaction")
//	defer l.Close(ctx)
//	token, err := l.Acquire(ctx)
//	for {
//		select {
//		case <-l.Lost(): // session invalidated, renewals failed for a TTL, or the key taken
//			return l.Err()
//		case job := <-jobs:
//			store.Write(job, token) // the store rejects tokens lower than the highest it has seen
//		}
//	}
//
// A lock is a lease, not a guarantee: a process paused longer than the TTL (GC, swap, SIGSTOP) or
// cut off from Consul still runs its critical section until it notices. The TTL plus lock-delay
// bound how long after its last renewal another holder can get the key; the fencing token (Token)
// is what makes writes safe regardless. Lock state is read with consistent reads and changed with
// raft writes, so a minority partition can neither acquire nor keep the lock. docs/coordination.md
// explains the trade-offs.
//
// coordinationtest.Consul is an in-memory Client for tests; package election builds leader election
// on Lock.
package lock
