package etcdsync

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudchassis/kit/coordination/lock"
	"github.com/cloudchassis/kit/internal/backoff"
)

// Keeper timing in these tests: TTL 9s, margin 1s, keep-alives every 3s.
const (
	kTTL    = 9 * time.Second
	kMargin = time.Second
)

// newKeeper returns a keeper whose keep-alive is step(ctx, n) for the n-th call (from 1), and the
// count of failures it reported.
func newKeeper(step func(ctx context.Context, n int) (time.Duration, error)) (keeper, *atomic.Int32) {
	var calls, failures atomic.Int32
	return keeper{ttl: kTTL, margin: kMargin, backoff: backoff.Policy{Base: 100 * time.Millisecond, Max: time.Second},
		renew:  func(ctx context.Context) (time.Duration, error) { return step(ctx, int(calls.Add(1))) },
		failed: func(error, int) { failures.Add(1) }}, &failures
}

func hang(ctx context.Context) (time.Duration, error) { <-ctx.Done(); return 0, ctx.Err() }

// runKeeper runs k from a grant sent at the bubble's start and returns the loss and when it came.
func runKeeper(ctx context.Context, k keeper) (*lock.LostError, time.Duration) {
	start := time.Now()
	lost := k.run(ctx, start.Add(kTTL-kMargin))
	return lost, time.Since(start)
}

func TestKeeperHealthyNeverLoses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		k, _ := newKeeper(func(context.Context, int) (time.Duration, error) {
			n.Add(1)
			time.Sleep(50 * time.Millisecond) // a round trip
			return kTTL, nil
		})
		ctx, cancel := context.WithTimeout(t.Context(), 10*kTTL)
		defer cancel()
		if lost, _ := runKeeper(ctx, k); lost != nil {
			t.Fatalf("lost %v with every keep-alive answered", lost)
		}
		// One keep-alive every TTL/3 (plus its round trip): about 30 in 10 TTLs.
		if got := n.Load(); got < 28 || got > 30 {
			t.Fatalf("%d keep-alives in 10 TTLs, want about 30", got)
		}
	})
}

// The loss comes at (send time of the last answered keep-alive + TTL - margin), not later: here the
// second keep-alive (sent at 3s) is answered, every later one hangs.
func TestKeeperLosesAtLastSendPlusTTLMinusMargin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k, _ := newKeeper(func(ctx context.Context, n int) (time.Duration, error) {
			if n <= 1 {
				return kTTL, nil
			}
			return hang(ctx)
		})
		lost, at := runKeeper(t.Context(), k)
		if lost == nil || lost.Reason != lock.ReasonRenewTimeout {
			t.Fatalf("lost = %v, want reason %s", lost, lock.ReasonRenewTimeout)
		}
		if want := 3*time.Second + kTTL - kMargin; at != want {
			t.Fatalf("lost at %v, want %v (last answered send 3s + TTL - margin)", at, want)
		}
	})
}

// A slow answer does not move the deadline later: the server renewed the lease when it processed
// the request, some time after it was sent, so the deadline counts from the send. clientv3's
// KeepAlive counts from the answer, which would give 2s more here.
func TestKeeperCountsFromSendNotAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k, _ := newKeeper(func(ctx context.Context, n int) (time.Duration, error) {
			if n == 1 {
				time.Sleep(2 * time.Second) // sent at 3s, answered at 5s
				return kTTL, nil
			}
			return hang(ctx)
		})
		_, at := runKeeper(t.Context(), k)
		if want := 3*time.Second + kTTL - kMargin; at != want {
			t.Fatalf("lost at %v, want %v", at, want)
		}
	})
}

// Failing keep-alives are retried faster than every TTL/3 and counted; the loss still comes at the
// deadline of the last success (the grant here).
func TestKeeperRetriesErrorsUntilDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k, failures := newKeeper(func(context.Context, int) (time.Duration, error) {
			return 0, errors.New("etcdserver: no leader")
		})
		lost, at := runKeeper(t.Context(), k)
		if lost == nil || lost.Reason != lock.ReasonRenewTimeout || at != kTTL-kMargin {
			t.Fatalf("lost = %v at %v, want %s at %v", lost, at, lock.ReasonRenewTimeout, kTTL-kMargin)
		}
		if f := failures.Load(); f < 3 {
			t.Fatalf("%d failures counted, want retries after the first failure at 3s", f)
		}
	})
}

// A recovered keep-alive moves the deadline on; a server-granted TTL above the configured one
// (etcd's minimum) does not lengthen the holder's trust.
func TestKeeperRecoversAndKeepsConfiguredTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var lastOK time.Time
		k, _ := newKeeper(func(ctx context.Context, n int) (time.Duration, error) {
			switch {
			case n <= 3:
				return 0, errors.New("unavailable")
			case n <= 6:
				lastOK = time.Now()
				return 60 * time.Second, nil
			}
			return hang(ctx)
		})
		start := time.Now()
		lost, at := runKeeper(t.Context(), k)
		if lost == nil || lost.Reason != lock.ReasonRenewTimeout {
			t.Fatalf("lost = %v", lost)
		}
		if want := lastOK.Sub(start) + kTTL - kMargin; at != want {
			t.Fatalf("lost at %v, want %v (last success %v + TTL - margin)", at, want, lastOK.Sub(start))
		}
	})
}

func TestKeeperLeaseGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k, _ := newKeeper(func(context.Context, int) (time.Duration, error) { return 0, errLeaseGone })
		lost, at := runKeeper(t.Context(), k)
		if lost == nil || lost.Reason != lock.ReasonSessionInvalidated || at != kTTL/3 {
			t.Fatalf("lost = %v at %v, want %s at the first keep-alive", lost, at, lock.ReasonSessionInvalidated)
		}
	})
}

func TestKeeperStopsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k, _ := newKeeper(func(ctx context.Context, _ int) (time.Duration, error) { return hang(ctx) })
		ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second) // during the hung keep-alive
		defer cancel()
		if lost, _ := runKeeper(ctx, k); lost != nil {
			t.Fatalf("lost = %v after the owner stopped the keeper, want nil", lost)
		}
	})
}
