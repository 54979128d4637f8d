package election_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/coordination/coordinationtest"
	"github.com/cloudchassis/kit/coordination/election"
	"github.com/cloudchassis/kit/coordination/lock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const key = "service/catalog/leader"

// journal records what candidates do, in order.
type journal struct {
	mu     sync.Mutex
	events []string
}

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.events = append(j.events, fmt.Sprintf(format, args...))
}

func (j *journal) all() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.events)
}

func candidate(t *testing.T, fc *coordinationtest.Consul, name string, j *journal, opts ...election.Option) *election.Election {
	t.Helper()
	base := []election.Option{
		election.WithLockOptions(lock.WithTTL(10*time.Second), lock.WithLockDelay(time.Second), lock.WithRetryWait(100*time.Millisecond)),
		election.WithOnElected(func(ctx context.Context, tok lock.Token) {
			j.add("%s elected", name)
			<-ctx.Done()
			time.Sleep(10 * time.Millisecond) // the leader's work takes a moment to stop
			j.add("%s stopped work", name)
		}),
		election.WithOnRevoked(func(tok lock.Token, cause error) {
			reason := "lost"
			switch {
			case errors.Is(cause, election.ErrResigned):
				reason = "resigned"
			case errors.Is(cause, election.ErrStopped):
				reason = "stopped"
			}
			j.add("%s revoked: %s", name, reason)
		}),
	}
	e, err := election.New(fc, key, name, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return e
}

func TestStopHandsOverCleanly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		var j journal
		a := candidate(t, fc, "a", &j)
		b := candidate(t, fc, "b", &j)
		ctx := context.Background()
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if l, err := b.Leader(ctx); err != nil || l.Value != "a" || !l.Exists() {
			t.Fatalf("Leader() = %+v, %v", l, err)
		}
		if _, ok := a.IsLeader(); !ok {
			t.Fatal("a does not know it leads")
		}
		if err := a.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		// A clean step-down has no lock-delay (1s here): b takes over within the pacing of its
		// blocking queries.
		time.Sleep(lock.DefaultMinInterval)
		synctest.Wait()
		want := []string{"a elected", "a stopped work", "a revoked: stopped", "b elected"}
		if got := j.all(); !slices.Equal(got, want) {
			t.Fatalf("events = %q, want %q", got, want)
		}
		if err := a.Start(ctx); !errors.Is(err, election.ErrStarted) {
			t.Fatalf("Start after Stop: %v", err)
		}
	})
}

func TestLossRevokesAndAnotherTakesOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		var j journal
		a := candidate(t, fc, "a", &j)
		b := candidate(t, fc, "b", &j)
		ctx := context.Background()
		_ = a.Start(ctx)
		synctest.Wait()
		_ = b.Start(ctx)
		synctest.Wait()
		fc.InvalidateSession(fc.Pair(key).Session)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		want := []string{"a elected", "a stopped work", "a revoked: lost", "b elected"}
		if got := j.all(); !slices.Equal(got, want) {
			t.Fatalf("events = %q, want %q", got, want)
		}
		l, err := a.Leader(ctx)
		if err != nil || l.Value != "b" {
			t.Fatalf("Leader() = %+v, %v", l, err)
		}
		if _, ok := a.IsLeader(); ok {
			t.Fatal("a still believes it leads")
		}
	})
}

func TestResignInLoopRejoinsLater(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		var j journal
		a := candidate(t, fc, "a", &j, election.WithRejoinDelay(5*time.Second))
		b := candidate(t, fc, "b", &j)
		ctx := context.Background()
		_ = a.Start(ctx)
		synctest.Wait()
		_ = b.Start(ctx)
		synctest.Wait()
		if err := a.Resign(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(lock.DefaultMinInterval)
		synctest.Wait()
		if err := a.Resign(ctx); !errors.Is(err, election.ErrNotLeader) {
			t.Fatalf("second Resign = %v", err)
		}
		want := []string{"a elected", "a stopped work", "a revoked: resigned", "b elected"}
		if got := j.all(); !slices.Equal(got, want) {
			t.Fatalf("events = %q, want %q", got, want)
		}
		// a campaigns again and takes over when b steps down.
		time.Sleep(6 * time.Second)
		if err := b.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := j.all(); got[len(got)-1] != "a elected" {
			t.Fatalf("events = %q, want a elected again", got)
		}
	})
}

func TestObserverFollowsTheLeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		var j journal
		a := candidate(t, fc, "a", &j)
		b := candidate(t, fc, "b", &j)
		o := election.NewObserver(fc, key)
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()

		if l, err := o.Next(ctx); err != nil || l.Exists() {
			t.Fatalf("first Next = %+v, %v; want no leader", l, err)
		}
		seen := make(chan election.Leader, 10)
		go func() {
			for {
				l, err := o.Next(ctx)
				if err != nil {
					close(seen)
					return
				}
				seen <- l
			}
		}()
		tok, err := a.Campaign(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l := <-seen; l.Value != "a" || l.Token != tok {
			t.Fatalf("observed %+v, want a with token %d", l, tok)
		}
		_ = b.Start(ctx)
		synctest.Wait()
		if err := a.Resign(ctx); err != nil {
			t.Fatal(err)
		}
		// Between a's release and b's acquire the key may briefly have no holder.
		l := <-seen
		if !l.Exists() {
			l = <-seen
		}
		if l.Value != "b" || l.Token <= tok {
			t.Fatalf("observed %+v, want b with a token above %d", l, tok)
		}
		before := fc.Queries()
		time.Sleep(30 * time.Minute)
		if n := fc.Queries() - before; n > 3*30+5 {
			t.Fatalf("%d queries in 30 quiet minutes", n)
		}
		cancel()
		if _, ok := <-seen; ok {
			t.Fatal("unexpected leader change")
		}
	})
}

func TestCampaignByHand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		e, err := election.New(fc, key, "10.0.0.7:8080", election.WithLockOptions(lock.WithTTL(10*time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := e.Resign(ctx); !errors.Is(err, election.ErrNotLeader) {
			t.Fatalf("Resign before Campaign = %v", err)
		}
		if _, err := e.Campaign(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.Resign(ctx); err != nil {
			t.Fatal(err)
		}
		if l, _ := e.Leader(ctx); l.Exists() {
			t.Fatalf("leader after Resign: %+v", l)
		}
		if _, err := e.Campaign(ctx); err != nil {
			t.Fatal(err)
		}
		if err := e.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if l, _ := e.Leader(ctx); l.Exists() || len(fc.Sessions()) != 0 {
			t.Fatalf("after Stop: leader %+v sessions %v", l, fc.Sessions())
		}
	})
}

func TestStopDoesNotWaitForeverForAStuckLeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		unblock := make(chan struct{})
		e, err := election.New(fc, key, "a",
			election.WithLockOptions(lock.WithTTL(10*time.Second)),
			election.WithOnElected(func(context.Context, lock.Token) { <-unblock }))
		if err != nil {
			t.Fatal(err)
		}
		_ = e.Start(context.Background())
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stop = %v, want the deadline", err)
		}
		if p := fc.Pair(key); p.Session != "" {
			t.Fatal("key still held after Stop")
		}
		close(unblock)
		synctest.Wait()
	})
}

func TestNewRejectsEmptyValue(t *testing.T) {
	if _, err := election.New(coordinationtest.New(), key, ""); err == nil {
		t.Fatal("empty value accepted")
	}
}

func TestNewWithRejectsNil(t *testing.T) {
	if _, err := election.NewWith(nil, nil); err == nil {
		t.Fatal("NewWith accepted a nil Locker and Source")
	}
}
