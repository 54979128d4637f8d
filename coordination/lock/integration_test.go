package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cloudchassis/kit/coordination/lock"
	"github.com/cloudchassis/kit/internal/consultest"
)

// TestMinorityPartitionCannotHoldTheLock isolates the raft leader, through which the lock holder
// talks to Consul, from the two other servers. The holder must give the lock up, a contender on the
// same (minority) server must not get it, and a contender on the majority side must get it only
// after the holder gave it up.
func TestMinorityPartitionCannotHoldTheLock(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs a 3-server consul cluster and partitions it with iptables; skipped with -short")
	}
	const ttl, delay = 10 * time.Second, time.Second
	cluster := consultest.StartPartitionableCluster(t, 3)
	minority := cluster.Leader()
	majority := cluster.Follower()
	const key = "it/partition/lock"
	newLock := func(a *consultest.Agent, value string) *lock.Lock {
		l, err := lock.New(lock.NewConsulClient(a.Client), key, lock.WithTTL(ttl), lock.WithLockDelay(delay),
			lock.WithValue([]byte(value)), lock.WithRetryWait(100*time.Millisecond), lock.WithBackoff(100*time.Millisecond, time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_ = l.Close(ctx)
		})
		return l
	}
	holder := newLock(minority, "holder")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tok1, err := holder.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lost := holder.Lost()

	type result struct {
		tok lock.Token
		err error
		at  time.Time
	}
	majorityGot := make(chan result, 1)
	contender := newLock(majority, "majority")
	go func() {
		tok, err := contender.Acquire(ctx)
		majorityGot <- result{tok, err, time.Now()}
	}()
	time.Sleep(time.Second) // the contender waits on a blocking query

	heal := cluster.Partition(minority)
	cut := time.Now()
	lostAt := make(chan time.Time, 1)
	go func() {
		select {
		case <-lost:
			lostAt <- time.Now()
		case <-ctx.Done():
			close(lostAt)
		}
	}()
	t.Logf("partitioned %s (raft leader, the holder's server, %s) from the others", minority.Name, minority.BindIP())

	// A contender on the minority side cannot acquire: no quorum, no consistent read, no write.
	minorityContender := newLock(minority, "minority")
	mctx, mcancel := context.WithTimeout(ctx, 3*ttl)
	_, merr := minorityContender.Acquire(mctx)
	mcancel()
	if !errors.Is(merr, context.DeadlineExceeded) {
		t.Fatalf("Acquire on the minority side = %v, want no lock until the deadline", merr)
	}

	lostTime, ok := <-lostAt
	if !ok {
		t.Fatal("the holder on the minority side never gave the lock up")
	}
	var le *lock.LostError
	if !errors.As(holder.Err(), &le) {
		t.Fatalf("holder Err() = %v", holder.Err())
	}
	t.Logf("MEASURED: minority holder gave the lock up %v after the partition (%s: %s)", lostTime.Sub(cut).Round(time.Millisecond), le.Reason, le.Detail)
	if d := lostTime.Sub(cut); d > ttl+2*time.Second {
		t.Errorf("holder kept believing for %v, more than the TTL %v after its last possible renewal", d, ttl)
	}

	var r result
	select {
	case r = <-majorityGot:
	case <-time.After(2*time.Minute - time.Since(cut)):
		t.Fatal("the majority side never got the lock")
	}
	if r.err != nil {
		t.Fatalf("majority Acquire: %v", r.err)
	}
	t.Logf("MEASURED: majority contender acquired %v after the partition (token %d > %d)", r.at.Sub(cut).Round(time.Millisecond), r.tok, tok1)
	if !lostTime.Before(r.at) {
		t.Errorf("overlap: the majority acquired at %v, before the minority holder gave up at %v", r.at.Sub(cut), lostTime.Sub(cut))
	}
	if r.tok <= tok1 {
		t.Errorf("token %d not above the old holder's %d", r.tok, tok1)
	}
	heal()
	if err := holder.Release(ctx); !errors.Is(err, lock.ErrLost) {
		t.Errorf("Release after the loss = %v, want the LostError", err)
	}
}
