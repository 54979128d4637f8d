package lb

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/cloudchassis/kit/discovery"
)

// Names of the built-in policies, for WithPolicy, LB_POLICY and CLIENT_<NAME>_LB_POLICY. docs/lb.md
// explains each one and when to choose which.
const (
	// P2C (the default) draws two instances and takes the one with the lower peak-EWMA latency times
	// calls in flight (Finagle's and Linkerd's "power of two choices with peak EWMA").
	P2C = "p2c"
	// LeastRequest draws two instances and takes the one with fewer calls in flight per weight.
	LeastRequest = "least_request"
	// RoundRobin cycles through the instances, each Instance.Weight times per cycle, interleaved.
	RoundRobin = "round_robin"
	// Random picks an instance at random with probability proportional to its weight.
	Random = "random"
	// RingHash maps the key set with WithHashKey onto a consistent-hash ring: the same key goes to
	// the same instance while the set is stable. Picks without a key are random.
	RingHash = "ring_hash"
)

// A Builder makes a policy's Picker for every new Table: each discovery update and each change of
// ejection state. Build is called under the balancer's lock, never concurrently for one balancer;
// prev is the balancer's previous Picker (nil the first time), so state such as a round-robin
// position can carry over. Register a Builder under a name with Register.
type Builder interface {
	Build(t *Table, prev Picker) Picker
}

// A Picker chooses an endpoint of its Table for one attempt. Pick must never block and should not
// allocate: it runs on every call. It returns nil when no endpoint is available. tried is nil for a
// first attempt; for a retry or a hedge it holds the instances the call already used, and Pick should
// choose another when one is available. Picks must be safe for concurrent use.
type Picker interface {
	Pick(ctx context.Context, tried *discovery.Tried) *Endpoint
}

// Table is the immutable input of a Picker, published on every change of the instance set or of the
// ejection state.
type Table struct {
	// Endpoints are the instances to choose from: the healthy ones, or all of them in panic mode.
	Endpoints []*Endpoint
	// Weights are their Instance.Weight, 0 counted as 1.
	Weights []int
	// Weighted reports whether some weights differ.
	Weighted bool

	b              *Balancer
	picker         Picker
	weight         []float64 // Weights as floats, for costs
	checkAvail     bool      // some endpoint may be unavailable (WithAvailability or InstanceTransport)
	err            error     // returned when Endpoints is empty
	errUnavailable error     // returned when every candidate is unavailable
}

// Rand returns a uniformly distributed random number from the balancer's source (the runtime's
// per-thread generator, or WithRandSource).
func (t *Table) Rand() uint64 { return t.b.rand64() }

// available reports whether Endpoints[i] may be picked.
func (t *Table) available(i int) bool { return !t.checkAvail || t.Endpoints[i].Available() }

var (
	registryMu sync.RWMutex
	registry   = map[string]Builder{}
)

// Register makes a balancing policy available under name to WithPolicy, LB_POLICY and
// CLIENT_<NAME>_LB_POLICY. Call it from an init function, like database/sql.Register; it panics on
// an empty name, a nil Builder or a name already registered.
func Register(name string, b Builder) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if name == "" || b == nil {
		panic("lb: Register with an empty name or a nil Builder")
	}
	if _, dup := registry[name]; dup {
		panic("lb: Register called twice for policy " + name)
	}
	registry[name] = b
}

// Policies returns the names of the registered policies, sorted.
func Policies() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return slices.Sorted(maps.Keys(registry))
}

// lookup returns the Builder registered under name, or an error that lists the known names.
func lookup(name string) (Builder, error) {
	registryMu.RLock()
	b := registry[name]
	registryMu.RUnlock()
	if b == nil {
		return nil, fmt.Errorf("lb: policy %q: not registered; known: %s", name, strings.Join(Policies(), ", "))
	}
	return b, nil
}

// untried returns the index of the endpoint to use instead of a pick the call already tried: the
// first available, untried endpoint from a random place other than skip, or, when cost is not nil,
// the cheapest of the first want such endpoints. It returns -1 when there is none.
func (t *Table) untried(tried *discovery.Tried, skip *Endpoint, want int, cost func(int) float64) int {
	n := len(t.Endpoints)
	start := bounded(uint32(t.Rand()), max(n, 1))
	best, bestCost, found := -1, 0.0, 0
	for k := 0; k < n && found < want; k++ {
		i := (start + k) % n
		c := t.Endpoints[i]
		if c == skip || tried.Has(c.key) || !t.available(i) {
			continue
		}
		found++
		var v float64 // compared only when there is a choice
		if cost != nil {
			v = cost(i)
		}
		if best < 0 || v < bestCost {
			best, bestCost = i, v
		}
	}
	return best
}

// keepUnlessTried is the avoidance of RoundRobin and Random: their own pick e stands unless the call
// already tried it; then the first untried, available endpoint from a random place, else e.
func (t *Table) keepUnlessTried(e *Endpoint, tried *discovery.Tried) *Endpoint {
	if e == nil || tried == nil || !tried.Has(e.key) {
		return e
	}
	if i := t.untried(tried, e, 1, nil); i >= 0 {
		return t.Endpoints[i]
	}
	return e
}

// scanFrom returns the first available endpoint from start on, or nil.
func (t *Table) scanFrom(start int) *Endpoint {
	n := len(t.Endpoints)
	for k := range n {
		if i := (start + k) % n; t.available(i) {
			return t.Endpoints[i]
		}
	}
	return nil
}
