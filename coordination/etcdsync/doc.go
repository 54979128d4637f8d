// Package etcdsync is coordination on etcd: a distributed lock with fencing tokens (Lock), the
// leader election of package election over it (NewSource for election.NewWith), and a dynconfig.KV
// that reads etcd keys (NewKV), behind the same interfaces and semantics as the Consul ones.
//
// Start with New and Acquire, exactly as with lock.Lock:
//
//	l, err := etcdsync.New(client, "/locks/compaction")
//	defer l.Close(ctx)
//	token, err := l.Acquire(ctx)
//	for {
//		select {
//		case <-l.Lost(): // lease revoked or expired, keep-alives failed until the local deadline
//			return l.Err() // a *lock.LostError
//		case job := <-jobs:
//			store.Write(job, token) // the store rejects tokens lower than the highest it has seen
//		}
//	}
//
// Each tenure holds a lease that the Lock keeps alive itself; it gives the lock up at (send time of
// the last successful keep-alive + TTL - margin) by its own clock, so a holder cut off in a minority
// partition stops before the majority can expire its lease and grant the lock again. The fencing
// token is the CreateRevision of the holder's key, strictly increasing across holders.
// docs/coordination.md compares this with Consul's sessions and lock-delay.
package etcdsync
