// Package feed is the versioned snapshot that the module's discovery.Watcher implementations
// serve (discovery/consul, discovery/kitsd, discovery/discoverytest): the latest snapshot, the
// wake-up of callers waiting for a newer one, and the Next loop they wait in.
package feed

import (
	"context"
	"sync"

	"github.com/cloudchassis/kit/discovery"
)

// Feed holds the latest snapshot. It has no lock of its own: its owner guards it, Cur included, with
// the mutex it passes to Next, so that a snapshot and the owner's other state change together. The
// zero value is an open feed at version 0.
type Feed struct {
	Cur     discovery.Snapshot
	changed chan struct{} // closed on the next Publish or Close; nil until someone waits
	closed  bool
}

// Publish makes s current with the next version and wakes every waiting Next.
func (f *Feed) Publish(s discovery.Snapshot) {
	s.Version = f.Cur.Version + 1
	f.Cur = s
	f.wake()
}

// Close makes Next return discovery.ErrClosed, now and later. It is idempotent.
func (f *Feed) Close() {
	f.closed = true
	f.wake()
}

func (f *Feed) wake() {
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

// Next blocks until f holds a snapshot with a Version above after and returns it. It returns
// discovery.ErrClosed once f is closed or done is (nil never is), and ctx's error if ctx ends first.
// mu is the lock that guards f.
func Next(ctx context.Context, mu sync.Locker, f *Feed, after uint64, done <-chan struct{}) (discovery.Snapshot, error) {
	for {
		select {
		case <-done:
			return discovery.Snapshot{}, discovery.ErrClosed
		default:
		}
		mu.Lock()
		snap, closed := f.Cur, f.closed
		if f.changed == nil {
			f.changed = make(chan struct{})
		}
		changed := f.changed
		mu.Unlock()
		if closed {
			return discovery.Snapshot{}, discovery.ErrClosed
		}
		if snap.Version > after {
			return snap, nil
		}
		select {
		case <-changed:
		case <-done:
			return discovery.Snapshot{}, discovery.ErrClosed
		case <-ctx.Done():
			return discovery.Snapshot{}, ctx.Err()
		}
	}
}
