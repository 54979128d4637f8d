package feed

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/cloudchassis/kit/discovery"
)

func TestNextWaitsForANewerVersion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			mu sync.Mutex
			f  Feed
		)
		got := make(chan discovery.Snapshot, 1)
		go func() {
			s, err := Next(t.Context(), &mu, &f, 0, nil)
			if err != nil {
				t.Error(err)
			}
			got <- s
		}()
		synctest.Wait()
		if len(got) != 0 {
			t.Fatal("Next returned before a snapshot was published")
		}
		mu.Lock()
		f.Publish(discovery.Snapshot{Service: "a"})
		mu.Unlock()
		if s := <-got; s.Version != 1 || s.Service != "a" {
			t.Fatalf("%+v", s)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := Next(ctx, &mu, &f, 1, nil); !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	})
}

func TestNextEndsOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			mu sync.Mutex
			f  Feed
		)
		f.Publish(discovery.Snapshot{})
		done := make(chan struct{})
		errs := make(chan error, 2)
		go func() { _, err := Next(t.Context(), &mu, &f, 1, nil); errs <- err }()
		go func() { _, err := Next(t.Context(), &mu, &f, 1, done); errs <- err }()
		synctest.Wait()
		close(done)
		if err := <-errs; !errors.Is(err, discovery.ErrClosed) {
			t.Fatal(err)
		}
		mu.Lock()
		f.Close()
		mu.Unlock()
		if err := <-errs; !errors.Is(err, discovery.ErrClosed) {
			t.Fatal(err)
		}
		// Closed wins over an available snapshot.
		if _, err := Next(t.Context(), &mu, &f, 0, nil); !errors.Is(err, discovery.ErrClosed) {
			t.Fatal(err)
		}
	})
}
