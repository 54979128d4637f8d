package lock_test

import (
	"context"
	"fmt"
	"time"

	"github.com/cloudchassis/kit/coordination/coordinationtest"
	"github.com/cloudchassis/kit/coordination/lock"
)

// Two workers take turns on one lock; the second holder's fencing token is higher, and a holder
// learns through Lost when Consul invalidates its session. coordinationtest stands in for Consul
// (use lock.NewConsulClient(client)).
func Example() {
	consul := coordinationtest.New()
	ctx := context.Background()
	newLock := func() *lock.Lock {
		l, err := lock.New(consul, "service/jobs/compaction", lock.WithTTL(10*time.Second), lock.WithLockDelay(time.Millisecond))
		if err != nil {
			panic(err)
		}
		return l
	}
	a, b := newLock(), newLock()
	defer a.Close(ctx)
	defer b.Close(ctx)

	t1, _ := a.Acquire(ctx)
	_ = a.Release(ctx)
	t2, _ := b.Acquire(ctx)
	fmt.Println("second token is higher:", t2 > t1)

	// An operator destroys b's session (or its node fails its health check).
	consul.InvalidateSession(consul.Pair("service/jobs/compaction").Session)
	<-b.Lost()
	fmt.Println(b.Err())
	// Output:
	// second token is higher: true
	// lock "service/jobs/compaction" (token 7) lost: session_invalidated: Consul no longer knows session session-2
}
