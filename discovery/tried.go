package discovery

import (
	"context"
	"slices"
	"sync"
)

// Tried records the instances one logical call has already used, so that its retries and hedges go
// to other instances when there are any. A retrying layer puts one in the call's context with
// WithTried; a balancer adds each instance it picks and avoids the ones already in it. A Tried is safe
// for concurrent use (hedged attempts run at the same time).
type Tried struct {
	mu  sync.Mutex
	ids []string
}

type triedKey struct{}

// WithTried returns a context that carries a new, empty Tried.
func WithTried(ctx context.Context) context.Context {
	return context.WithValue(ctx, triedKey{}, &Tried{})
}

// TriedFrom returns the Tried in ctx, or nil.
func TriedFrom(ctx context.Context) *Tried {
	t, _ := ctx.Value(triedKey{}).(*Tried)
	return t
}

// Add records an instance id.
func (t *Tried) Add(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !slices.Contains(t.ids, id) {
		t.ids = append(t.ids, id)
	}
}

// Has reports whether id was recorded.
func (t *Tried) Has(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Contains(t.ids, id)
}

// Len returns how many instances were recorded.
func (t *Tried) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.ids)
}
