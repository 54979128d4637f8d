package lock_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/coordination/coordinationtest"
	"github.com/cloudchassis/kit/coordination/lock"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const key = "service/jobs/lock"

func newLock(t *testing.T, c lock.Client, opts ...lock.Option) *lock.Lock {
	t.Helper()
	base := []lock.Option{lock.WithTTL(10 * time.Second), lock.WithLockDelay(time.Second)}
	l, err := lock.New(c, key, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestAcquireReleaseAndTokensIncrease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		a := newLock(t, fc, lock.WithValue([]byte("a")))
		b := newLock(t, fc, lock.WithValue([]byte("b")))
		ctx := context.Background()

		tokA, err := a.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p := fc.Pair(key); p == nil || string(p.Value) != "a" || lock.Token(p.ModifyIndex) != tokA {
			t.Fatalf("key after acquire = %+v, want value a and ModifyIndex %d", p, tokA)
		}
		if tok, ok := a.Token(); !ok || tok != tokA {
			t.Fatalf("Token() = %d, %v", tok, ok)
		}
		if _, err := a.Acquire(ctx); !errors.Is(err, lock.ErrHeld) {
			t.Fatalf("second Acquire: %v, want ErrHeld", err)
		}

		type res struct {
			tok lock.Token
			err error
			at  time.Time
		}
		got := make(chan res, 1)
		go func() {
			tok, err := b.Acquire(ctx)
			got <- res{tok, err, time.Now()}
		}()
		time.Sleep(time.Minute) // b waits on a blocking query all along
		synctest.Wait()
		select {
		case r := <-got:
			t.Fatalf("b acquired while a holds: %+v", r)
		default:
		}
		lostA := a.Lost()
		released := time.Now()
		if err := a.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if !closed(lostA) || a.Err() != nil {
			t.Fatalf("after Release: lost closed %v, Err %v", closed(lostA), a.Err())
		}
		r := <-got
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.tok <= tokA {
			t.Fatalf("token of the second holder %d is not above the first %d", r.tok, tokA)
		}
		// A clean release triggers no lock-delay: only the pacing of blocking queries remains.
		if d := r.at.Sub(released); d > lock.DefaultMinInterval {
			t.Fatalf("b acquired %v after the release, want at once", d)
		}
		if err := a.Release(ctx); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Release when idle: %v, want ErrNotHeld", err)
		}
		if got := len(fc.Sessions()); got != 1 {
			t.Fatalf("live sessions = %d, want 1 (a's was destroyed)", got)
		}
	})
}

func TestRenewalKeepsTheLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		l := newLock(t, fc)
		if _, err := l.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Minute) // 60 TTLs
		if closed(l.Lost()) {
			t.Fatalf("lost after renewals: %v", l.Err())
		}
		if _, ok := l.Token(); !ok {
			t.Fatal("not held")
		}
	})
}

func TestLossReasons(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(fc *coordinationtest.Consul, session string)
		reason string
	}{
		{"session invalidated", func(fc *coordinationtest.Consul, s string) { fc.InvalidateSession(s) }, lock.ReasonSessionInvalidated},
		{"key deleted", func(fc *coordinationtest.Consul, _ string) { fc.Delete(key) }, lock.ReasonKeyLost},
		{"key overwritten by another session", func(fc *coordinationtest.Consul, _ string) {
			fc.Delete(key)
			id, _ := fc.CreateSession(context.Background(), nil)
			if ok, err := fc.Acquire(context.Background(), &api.KVPair{Key: key, Session: id}); !ok || err != nil {
				panic("fake refused acquire")
			}
		}, lock.ReasonKeyLost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				fc := coordinationtest.New()
				reader := metric.NewManualReader()
				l := newLock(t, fc, lock.WithMeterProvider(metric.NewMeterProvider(metric.WithReader(reader))))
				tok, err := l.Acquire(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				lost := l.Lost()
				tc.break_(fc, fc.Pair(key).Session)
				synctest.Wait()
				if !closed(lost) {
					t.Fatal("Lost not closed")
				}
				var le *lock.LostError
				if err := l.Err(); !errors.As(err, &le) || !errors.Is(err, lock.ErrLost) || le.Reason != tc.reason || le.Token != tok {
					t.Fatalf("Err() = %v, want a LostError with reason %s and token %d", err, tc.reason, tok)
				}
				if err := l.Release(context.Background()); !errors.Is(err, lock.ErrLost) {
					t.Fatalf("Release after loss = %v, want the LostError", err)
				}
				losses := points(t, reader, semconv.MetricLockLosses)
				if len(losses) != 1 || losses[0].Value != 1 {
					t.Fatalf("%s = %+v, want one point of 1", semconv.MetricLockLosses, losses)
				}
				if v, _ := losses[0].Attributes.Value(semconv.AttrLockReason); v.AsString() != tc.reason {
					t.Fatalf("%s %s = %q, want %q", semconv.MetricLockLosses, semconv.AttrLockReason, v.AsString(), tc.reason)
				}
				if n := sumCounter(t, reader, semconv.MetricLockHeld); n != 0 {
					t.Fatalf("%s = %d, want 0 after the loss", semconv.MetricLockHeld, n)
				}
				if n := sumCounter(t, reader, semconv.MetricLockAcquisitions); n != 1 {
					t.Fatalf("%s = %d, want 1", semconv.MetricLockAcquisitions, n)
				}
			})
		})
	}
}

// After the holder's session is invalidated, the next holder waits exactly the lock-delay.
func TestLockDelayAfterInvalidation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		a := newLock(t, fc)
		b := newLock(t, fc, lock.WithRetryWait(100*time.Millisecond))
		ctx := context.Background()
		if _, err := a.Acquire(ctx); err != nil {
			t.Fatal(err)
		}
		done := make(chan time.Time, 1)
		go func() {
			if _, err := b.Acquire(ctx); err != nil {
				t.Error(err)
			}
			done <- time.Now()
		}()
		synctest.Wait()
		start := time.Now()
		fc.InvalidateSession(fc.Pair(key).Session)
		at := <-done
		if d := at.Sub(start); d < time.Second || d > time.Second+200*time.Millisecond {
			t.Fatalf("b acquired %v after the invalidation, want lock-delay 1s (+ one retry wait)", d)
		}
	})
}

// With Consul unreachable, the holder gives the lock up one TTL after its last renewal: no later,
// because from then on Consul may expire the session and, after lock-delay, grant the key to another.
func TestRenewTimeoutWhenConsulIsUnreachable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		l := newLock(t, fc, lock.WithTTL(10*time.Second))
		if _, err := l.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5*time.Second + time.Millisecond) // just after the first renewal at TTL/2
		synctest.Wait()
		lastRenewal := time.Now().Add(-time.Millisecond)
		fc.SetError(errors.New("connection refused"))
		lost := l.Lost()
		select {
		case <-lost:
		case <-time.After(time.Minute):
			t.Fatal("not lost after a minute without Consul")
		}
		if d := time.Since(lastRenewal); d != 10*time.Second {
			t.Fatalf("lost %v after the last renewal, want the TTL (10s)", d)
		}
		var le *lock.LostError
		if !errors.As(l.Err(), &le) || le.Reason != lock.ReasonRenewTimeout {
			t.Fatalf("Err() = %v, want renew_timeout", l.Err())
		}
		before := fc.Queries()
		time.Sleep(time.Minute)
		if n := fc.Queries() - before; n != 0 {
			t.Fatalf("%d queries after the loss, want 0 (goroutines stopped)", n)
		}
		fc.SetError(nil)
		// Acquire after a loss cleans up and starts over.
		if _, err := l.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

func TestWaitingDoesNotSpin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		a := newLock(t, fc)
		b := newLock(t, fc, lock.WithWaitTime(time.Minute))
		if _, err := a.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		before := fc.Queries()
		_, err := b.Acquire(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Acquire = %v, want deadline exceeded", err)
		}
		// One blocking query per wait time (a minute) for b and for a's monitor: session renewals do
		// not change the KV index.
		if n := fc.Queries() - before; n > 2*60+5 {
			t.Fatalf("%d queries in an hour of waiting, want about 2 per minute", n)
		}
		if s := fc.Sessions(); len(s) != 1 {
			t.Fatalf("sessions after the abandoned Acquire = %v, want only a's", s)
		}
	})
}

func TestErrorsAreRetriedWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		l := newLock(t, fc)
		fc.SetError(errors.New("503 no leader"))
		done := make(chan error, 1)
		go func() {
			_, err := l.Acquire(context.Background())
			done <- err
		}()
		time.Sleep(time.Minute)
		if n := fc.Queries(); n != 0 {
			t.Fatalf("%d queries before a session exists", n)
		}
		fc.SetError(nil)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(lock.DefaultBackoffMax + time.Second):
			t.Fatal("not acquired within the maximum backoff after recovery")
		}
	})
}

func TestCloseInterruptsAcquire(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		a := newLock(t, fc)
		b, err := lock.New(fc, key, lock.WithTTL(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := b.Acquire(context.Background())
			done <- err
		}()
		synctest.Wait()
		if err := b.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := <-done; !errors.Is(err, lock.ErrClosed) {
			t.Fatalf("Acquire = %v, want ErrClosed", err)
		}
		if err := b.Close(context.Background()); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := b.Acquire(context.Background()); !errors.Is(err, lock.ErrClosed) {
			t.Fatalf("Acquire after Close = %v", err)
		}
		// Close of a holder releases the key.
		if err := a.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if p := fc.Pair(key); p.Session != "" || len(fc.Sessions()) != 0 {
			t.Fatalf("after Close: holder %q, sessions %v", p.Session, fc.Sessions())
		}
	})
}

func TestNewValidates(t *testing.T) {
	fc := coordinationtest.New()
	for _, opts := range [][]lock.Option{
		{lock.WithTTL(time.Second)},
		{lock.WithTTL(25 * time.Hour)},
		{lock.WithLockDelay(0)},
		{lock.WithBehavior("keep")},
	} {
		if _, err := lock.New(fc, key, opts...); err == nil {
			t.Errorf("New accepted %v", opts)
		}
	}
	if _, err := lock.New(fc, ""); err == nil {
		t.Error("New accepted an empty key")
	}
	if _, err := lock.New(nil, key); err == nil {
		t.Error("New accepted a nil client")
	}
}

func TestBehaviorDeleteKeepsTokensIncreasing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fc := coordinationtest.New()
		ctx := context.Background()
		var last lock.Token
		for i := range 3 {
			l := newLock(t, fc, lock.WithBehavior(lock.BehaviorDelete))
			tok, err := l.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if tok <= last {
				t.Fatalf("holder %d token %d, previous %d", i, tok, last)
			}
			if p := fc.Pair(key); p.LockIndex != 1 {
				t.Fatalf("LockIndex = %d: the key was recreated, so LockIndex restarted", p.LockIndex)
			}
			last = tok
			fc.InvalidateSession(fc.Pair(key).Session) // deletes the key
			synctest.Wait()
			time.Sleep(time.Second) // lock-delay
		}
	})
}

func sumCounter(t *testing.T, r *metric.ManualReader, name string) int64 {
	t.Helper()
	var n int64
	for _, dp := range points(t, r, name) {
		n += dp.Value
	}
	return n
}

// points returns the data points of the int64 sum name, which must be in the scheme's lock scope and
// carry the lock's key on every point.
func points(t *testing.T, r *metric.ManualReader, name string) []metricdata.DataPoint[int64] {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			if sm.Scope.Name != semconv.ScopeLock {
				t.Fatalf("%s in scope %q, want %q", name, sm.Scope.Name, semconv.ScopeLock)
			}
			s, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				t.Fatalf("%s is a %T, want an int64 sum", name, m.Data)
			}
			for _, dp := range s.DataPoints {
				if v, _ := dp.Attributes.Value(semconv.AttrLockKey); v.AsString() != key {
					t.Fatalf("%s point has %s=%q, want %q", name, semconv.AttrLockKey, v.AsString(), key)
				}
			}
			return s.DataPoints
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}
