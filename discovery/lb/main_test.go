package lb

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/discovery"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// instances returns n instances "i0".."i<n-1>" at distinct addresses.
func instances(n int) []discovery.Instance {
	out := make([]discovery.Instance, n)
	for i := range out {
		out[i] = discovery.Instance{ID: fmt.Sprintf("i%d", i), Address: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), Port: 8080}
	}
	return out
}

func seeded() Option { return WithRandSource(rand.NewPCG(1, 2)) }

func mustFixed(t testing.TB, insts []discovery.Instance, opts ...Option) *Balancer {
	t.Helper()
	b, err := NewFixed("svc", insts, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// pickN makes n picks, releasing each at once, and counts them by instance ID.
func pickN(t testing.TB, b *Balancer, ctx context.Context, n int) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for range n {
		e, err := b.Pick(ctx)
		if err != nil {
			t.Fatal(err)
		}
		counts[e.key]++
		e.Release()
	}
	return counts
}

// chiSquare returns Pearson's statistic of counts against expected shares (which sum to 1).
func chiSquare(counts map[string]int, shares map[string]float64, total int) float64 {
	var x2 float64
	for id, p := range shares {
		exp := p * float64(total)
		d := float64(counts[id]) - exp
		x2 += d * d / exp
	}
	return x2
}

// fakeWatcher is a discovery.Watcher fed by set.
type fakeWatcher struct {
	mu      sync.Mutex
	snap    discovery.Snapshot
	changed chan struct{}
	err     error
}

func newFakeWatcher() *fakeWatcher { return &fakeWatcher{changed: make(chan struct{})} }

func (w *fakeWatcher) set(insts ...discovery.Instance) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.snap = discovery.Snapshot{Service: "svc", Instances: insts, Version: w.snap.Version + 1}
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *fakeWatcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *fakeWatcher) Next(ctx context.Context, after uint64) (discovery.Snapshot, error) {
	for {
		w.mu.Lock()
		if w.err != nil {
			w.mu.Unlock()
			return discovery.Snapshot{}, w.err
		}
		if w.snap.Version > after {
			s := w.snap
			w.mu.Unlock()
			return s, nil
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return discovery.Snapshot{}, ctx.Err()
		}
	}
}

var _ discovery.Watcher = (*fakeWatcher)(nil)
