package feed

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudchassis/kit/discovery"
)

func TestPoolSharesLoopsAndStopsThemWithTheLastHandle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p Pool
		t.Cleanup(p.Close)
		starts := 0
		var running atomic.Int32
		start := func(s *Shared) func(context.Context) {
			starts++
			return func(ctx context.Context) {
				running.Add(1)
				s.Mu.Lock()
				s.Feed.Publish(discovery.Snapshot{Service: s.Service, Instances: []discovery.Instance{{ID: "a"}}, Err: errors.New("down"), Updated: time.Now()})
				s.Mu.Unlock()
				<-ctx.Done()
				running.Add(-1)
			}
		}
		h1, _ := p.Watch("k", "svc", start)
		h2, _ := p.Watch("k", "svc", start)
		other, _ := p.Watch("k2", "svc", start)
		synctest.Wait()
		if starts != 2 || running.Load() != 2 {
			t.Fatalf("starts %d, running %d; want 2 loops for 2 keys", starts, running.Load())
		}
		if s, err := h2.Next(t.Context(), 0); err != nil || s.Service != "svc" || s.Version != 1 {
			t.Fatalf("%+v %v", s, err)
		}
		time.Sleep(3 * time.Second)
		if g := p.Gauges(time.Now())["svc"]; g.Instances != 1 || g.Age != 3 {
			t.Fatalf("gauges %+v; want 1 instance, age 3 s", g)
		}
		_ = h1.Close()
		_ = h1.Close()
		synctest.Wait()
		if running.Load() != 2 {
			t.Fatal("a loop stopped while a handle remained")
		}
		_ = h2.Close()
		if running.Load() != 1 {
			t.Fatal("Close of the last handle returned before its loop stopped")
		}
		if _, err := h2.Next(t.Context(), 0); !errors.Is(err, discovery.ErrClosed) {
			t.Fatalf("Next after Close: %v", err)
		}
		blocked := make(chan error, 1)
		go func() { _, err := other.Next(t.Context(), 1); blocked <- err }()
		synctest.Wait()
		p.Close()
		if running.Load() != 0 {
			t.Fatal("Pool.Close returned before its loops stopped")
		}
		if err := <-blocked; !errors.Is(err, discovery.ErrClosed) {
			t.Fatalf("blocked Next after Pool.Close: %v", err)
		}
		if _, err := p.Watch("k", "svc", start); !errors.Is(err, discovery.ErrClosed) {
			t.Fatalf("Watch after Close: %v", err)
		}
		p.Close()
	})
}
