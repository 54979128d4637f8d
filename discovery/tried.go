package discovery

import (
	"context"
	"net/http"
	"slices"
	"sync"
)

// Tried records the instances one logical call has already used, so that its retries and hedges go
// to other instances when there are any. A retrying layer puts one in the call's context with
// WithTried; a balancer adds each instance it picks and avoids the ones already in it. A Tried is safe
// for concurrent use (hedged attempts run at the same time). The zero value is empty and ready.
type Tried struct {
	mu  sync.Mutex
	ids []string
	buf [3]string // the first ids, without an allocation of their own (3 attempts by default)
}

type triedKey struct{}

// triedCtx carries a Tried in the same allocation as the context node: context.WithValue plus a
// separate Tried and its slice cost 3 allocations, this costs 1.
type triedCtx struct {
	context.Context
	t Tried
}

func (c *triedCtx) Value(key any) any {
	if key == (triedKey{}) {
		return &c.t
	}
	return c.Context.Value(key)
}

func (c *triedCtx) String() string { return "discovery.WithTried" }

// WithTried returns a context that carries a new, empty Tried. Cancellation, deadline and the other
// values are those of ctx.
func WithTried(ctx context.Context) context.Context {
	return &triedCtx{Context: ctx}
}

// A TriedRoundTripper picks an instance for each request (a balancer), avoiding the instances in
// tried when it can, and records its pick there. discovery/lb's Transport is one. Retrying and hedging
// layers that find one below them hand it the call's Tried directly: carrying the Tried in the
// request's context instead costs a copy of the request on every call (WithTried plus
// http.Request.WithContext), about a fifth of the resilient client's overhead.
type TriedRoundTripper interface {
	http.RoundTripper
	// RoundTripTried is RoundTrip for one attempt of a call that already used the instances in
	// tried. A nil tried means the request's context is looked at (TriedFrom), as RoundTrip does.
	RoundTripTried(req *http.Request, tried *Tried) (*http.Response, error)
}

// ContextWithTried returns a context that carries t.
func ContextWithTried(ctx context.Context, t *Tried) context.Context {
	return context.WithValue(ctx, triedKey{}, t)
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
	if t.ids == nil {
		t.ids = t.buf[:0]
	}
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
