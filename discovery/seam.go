package discovery

import (
	"net/http"
	"slices"
	"sync"
)

// The seam between a balancer (discovery/lb) and the per-call and per-instance client policies
// (resilience). Neither package imports the other; both use these types, and chassis wires them. A
// call walks the layers once, in order, and its answer walks back the same way:
//
//	resilience (Dependency.Wrap): dependency breaker, timeout, retry, hedge  -- holds the call's Tried
//	discovery/lb (Transport): pick an instance, avoiding Tried               -- TriedRoundTripper
//	the instance's transport (Dependency.Instance): breaker, attempt limits  -- InstanceTransport
//	net/http
//
// Every layer reads results through one Classifier (Class, Classify).

// Tried records the instances one logical call has already used, so that its retries and hedges go
// to other instances when there are any. The retrying layer makes one per call and hands it down
// with RoundTripTried; the balancer adds each instance it picks and avoids the ones already in it. A
// Tried is safe for concurrent use (hedged attempts run at the same time). The zero value is empty
// and ready.
type Tried struct {
	mu  sync.Mutex
	ids []string
	buf [3]string // the first ids, without an allocation of their own (3 attempts by default)
}

// A TriedRoundTripper picks an instance for each request (a balancer), avoiding the instances in
// tried when it can, and records its pick there. discovery/lb's Transport is one. It is the only way
// a Tried travels: a retrying or hedging layer that finds one directly below it hands it the call's
// Tried; through any other RoundTripper, attempts are picked without it.
type TriedRoundTripper interface {
	http.RoundTripper
	// RoundTripTried is RoundTrip for one attempt of a call that already used the instances in
	// tried; nil tried is RoundTrip.
	RoundTripTried(req *http.Request, tried *Tried) (*http.Response, error)
}

// An InstancePolicy is the per-instance half of a client's policies, which a balancer installs on
// every instance (lb.WithInstancePolicy); resilience.Dependency is one.
type InstancePolicy interface {
	// Instance wraps next, the transport to the instance id, once when the instance appears. The
	// result may be an InstanceTransport.
	Instance(id string, next http.RoundTripper) http.RoundTripper
	// Classify is the classifier the balancer's outlier ejection shares with the policies.
	Classify(resp *http.Response, err error) Class
}

// An InstanceTransport is a per-instance transport that may refuse calls for a while (its circuit
// breaker is open): a balancer skips the instance while Available is false, like an ejected one.
// resilience.Dependency.Instance returns one. Available must be cheap and safe for concurrent use:
// it runs on every pick that considers the instance.
type InstanceTransport interface {
	http.RoundTripper
	Available() bool
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
