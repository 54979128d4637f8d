package etcdsync_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cloudchassis/kit/coordination/election"
	"github.com/cloudchassis/kit/coordination/etcdsync"
	"github.com/cloudchassis/kit/coordination/lock"
	"github.com/cloudchassis/kit/internal/etcdtest"
)

// A holder whose client talks only to a member that gets cut off from the other two loses the lock
// before the majority grants it to a contender on the other side, and the contender's fencing token
// is higher: no overlap.
func TestMinorityPartitionHolderStopsFirst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-member etcd cluster")
	}
	c := etcdtest.StartPartitionableCluster(t, 3)
	for _, cut := range []struct {
		name   string
		member func() *etcdtest.Member
	}{{"follower", c.Follower}, {"leader", c.Leader}} {
		t.Run(cut.name, func(t *testing.T) {
			minority := cut.member()
			other := otherThan(c, minority)
			key := "/locks/partition-" + cut.name
			holder := newLock(t, newClient(t, minority.Endpoint()), key, etcdsync.WithValue([]byte("holder")))
			contender := newLock(t, newClient(t, other.Endpoint()), key, etcdsync.WithValue([]byte("contender")))
			t1 := acquire(t, holder, 10*time.Second)

			var lostAt, acquiredAt time.Time
			var t2 lock.Token
			var wg sync.WaitGroup
			lost := holder.Lost()
			wg.Go(func() {
				select {
				case <-lost:
					lostAt = time.Now()
				case <-time.After(30 * time.Second):
				}
			})
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				tok, err := contender.Acquire(ctx)
				acquiredAt = time.Now()
				if err != nil {
					t.Errorf("contender: %v", err)
				}
				t2 = tok
			})
			time.Sleep(500 * time.Millisecond) // the contender is queued
			heal := c.Isolate(minority)
			isolated := time.Now()
			wg.Wait()
			// Nobody can take the lock through the cut-off member.
			cut := newLock(t, newClient(t, minority.Endpoint()), key)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			tried := time.Now()
			_, minorityErr := cut.Acquire(ctx)
			cancel()
			heal()
			if minorityErr == nil {
				t.Fatal("a contender acquired the lock through the cut-off member")
			}
			if d := time.Since(tried); d > 2*time.Second+lock.DefaultCleanupTimeout {
				t.Fatalf("Acquire through the cut-off member returned after %v, want its ctx's 2s plus cleanup at most", d)
			}
			t.Logf("through the cut-off member: %v after %v", minorityErr, time.Since(tried))

			if lostAt.IsZero() || acquiredAt.IsZero() {
				t.Fatalf("holder lost at %v, contender acquired at %v: want both", lostAt, acquiredAt)
			}
			t.Logf("isolated at 0; holder lost at %v (%v), contender acquired at %v, gap %v; tokens %d -> %d",
				lostAt.Sub(isolated), holder.Err(), acquiredAt.Sub(isolated), acquiredAt.Sub(lostAt), t1, t2)
			if !lostAt.Before(acquiredAt) {
				t.Fatalf("overlap: the holder stopped at %v, after the contender got the lock at %v", lostAt, acquiredAt)
			}
			// The holder stops at its last successful keep-alive's send + TTL - margin; that send was
			// before the cut, so within the TTL of it (the margin absorbs scheduling).
			if lostAt.Sub(isolated) > itTTL {
				t.Fatalf("the holder noticed after %v, more than the TTL %v", lostAt.Sub(isolated), itTTL)
			}
			if acquiredAt.Sub(isolated) > 3*itTTL {
				t.Fatalf("the majority granted the lock only after %v", acquiredAt.Sub(isolated))
			}
			var le *lock.LostError
			if !errors.As(holder.Err(), &le) || le.Reason != lock.ReasonRenewTimeout || le.Token != t1 {
				t.Fatalf("holder's Err() = %v; want a LostError for token %d, reason %s", holder.Err(), t1, lock.ReasonRenewTimeout)
			}
			if t2 <= t1 {
				t.Fatalf("tokens %d then %d: want the majority's token higher", t1, t2)
			}
			for _, m := range c.Members {
				m.WaitReady(etcdtest.ClusterReadyTimeout)
			}
		})
	}
}

// Killing the leader: a lock held through a client of all members survives (the new leader keeps
// its lease; its TTL must leave room for an election between keep-alives: TTL - TTL/3 - margin
// longer than the 1-3 s etcd takes here), and an elected candidate whose client talked only to the killed member is replaced by
// the other candidate, whose elected function starts after the old one returned, with a higher token.
func TestLeaderKillLockSurvivesElectionMovesOn(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-member etcd cluster")
	}
	c := etcdtest.StartCluster(t, 3)
	leader := c.Leader()
	other := otherThan(c, leader)
	all := newClient(t, c.Endpoints()...)
	const survivorTTL = 6 * time.Second
	held := newLock(t, all, "/locks/survivor", etcdsync.WithTTL(survivorTTL))
	tok := acquire(t, held, 10*time.Second)

	var mu sync.Mutex
	var events []string
	var stoppedA time.Time
	elected := make(chan lock.Token, 2)
	candidate := func(name string, m *etcdtest.Member) *election.Election {
		cli := newClient(t, m.Endpoint())
		l, err := etcdsync.New(cli, "/elections/leader-kill", etcdsync.WithTTL(itTTL), etcdsync.WithMargin(itMargin),
			etcdsync.WithValue([]byte(name)))
		if err != nil {
			t.Fatal(err)
		}
		e, err := election.NewWith(l, etcdsync.NewSource(cli, "/elections/leader-kill"),
			election.WithOnElected(func(ctx context.Context, tok lock.Token) {
				mu.Lock()
				events = append(events, name+" elected")
				mu.Unlock()
				elected <- tok
				<-ctx.Done()
				mu.Lock()
				events = append(events, name+" stopped")
				if name == "a" {
					stoppedA = time.Now()
				}
				mu.Unlock()
			}))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = e.Stop(ctx)
		})
		return e
	}
	a := candidate("a", leader)
	var ta lock.Token
	select {
	case ta = <-elected:
	case <-time.After(10 * time.Second):
		t.Fatal("a was not elected")
	}
	b := candidate("b", other)
	if ld, err := b.Leader(context.Background()); err != nil || ld.Value != "a" || ld.Token != ta {
		t.Fatalf("b sees leader %+v, %v; want a with token %d", ld, err, ta)
	}

	leader.Kill()
	killed := time.Now()
	var tb lock.Token
	select {
	case tb = <-elected:
	case <-time.After(20 * time.Second):
		t.Fatal("b was not elected after the leader was killed")
	}
	electedB := time.Now()
	mu.Lock()
	order, stopA := append([]string(nil), events...), stoppedA
	mu.Unlock()
	t.Logf("leader killed at 0; a stopped at %v, b elected at %v; tokens %d -> %d; events %v",
		stopA.Sub(killed), electedB.Sub(killed), ta, tb, order)
	if len(order) != 3 || order[1] != "a stopped" || order[2] != "b elected" || !stopA.Before(electedB) {
		t.Fatalf("events %v: want a's elected function stopped before b's started", order)
	}
	if tb <= ta {
		t.Fatalf("tokens %d then %d: want strictly increasing", ta, tb)
	}
	if _, ok := a.IsLeader(); ok {
		t.Fatal("a still claims leadership")
	}
	if ld, err := b.Leader(context.Background()); err != nil || ld.Value != "b" || ld.Token != tb {
		t.Fatalf("leader %+v, %v; want b with token %d", ld, err, tb)
	}
	// The lock held through every member is still held, with the same token, more than a TTL later.
	time.Sleep(survivorTTL)
	if got, ok := held.Token(); !ok || got != tok || closed(held.Lost()) {
		t.Fatalf("lock after the leader's death: %v %v, err %v; want still held with token %d", got, ok, held.Err(), tok)
	}
}

// otherThan returns a member of c other than m.
func otherThan(c *etcdtest.Cluster, m *etcdtest.Member) *etcdtest.Member {
	for _, o := range c.Members {
		if o != m {
			return o
		}
	}
	panic("etcdsync test: a cluster of one")
}
