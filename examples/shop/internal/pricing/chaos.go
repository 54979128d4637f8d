package pricing

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/cloudchassis/kit/examples/shop/internal/shop"
	"github.com/cloudchassis/kit/httpx"
	"github.com/cloudchassis/kit/problem"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Faults is the fault injection of one pricing instance, as /chaos reads and writes it.
type Faults struct {
	// Latency is added to the affected requests ("300ms").
	Latency Duration `json:"latency"`
	// LatencyRate is the share of requests that get Latency, in (0, 1]; 0 means all of them. A small
	// rate (0.01) makes a slow tail: the p99 moves, the median does not.
	LatencyRate float64 `json:"latency_rate,omitempty" validate:"gte=0,lte=1"`
	// ErrorRate is the share of requests answered 500, in [0, 1].
	ErrorRate float64 `json:"error_rate,omitempty" validate:"gte=0,lte=1"`
	// Storm answers every request 503 with Retry-After for this long from the PUT ("5s"), as an
	// overloaded instance would. GET reports what is left of it.
	Storm Duration `json:"storm,omitempty"`
}

// Duration is a time.Duration that reads and writes JSON as "1.5s".
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler: a Go duration string, or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("duration: want a string like \"300ms\": %w", err)
		}
		if n < 0 {
			return fmt.Errorf("duration %d: must not be negative", n)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	if v < 0 {
		return fmt.Errorf("duration %q: must not be negative", s)
	}
	*d = Duration(v)
	return nil
}

// Chaos holds the Faults of an instance and applies them. It is safe for concurrent use.
type Chaos struct {
	now   func() time.Time
	float func() float64

	mu         sync.RWMutex
	f          Faults
	stormUntil time.Time
}

// NewChaos returns a Chaos that injects nothing.
func NewChaos() *Chaos { return &Chaos{now: time.Now, float: rand.Float64} }

// Set replaces the faults; a Storm starts now.
func (c *Chaos) Set(f Faults) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.f = f
	c.stormUntil = time.Time{}
	if f.Storm > 0 {
		c.stormUntil = c.now().Add(time.Duration(f.Storm))
	}
}

// Faults returns the current faults, Storm being what is left of it.
func (c *Chaos) Faults() Faults {
	c.mu.RLock()
	defer c.mu.RUnlock()
	f := c.f
	f.Storm = 0
	if left := c.stormUntil.Sub(c.now()); left > 0 {
		f.Storm = Duration(left)
	}
	return f
}

// outcome is what the faults make of one request: a storm with this much left, an injected error,
// or a delay before the answer (all zero: no fault).
type outcome struct {
	storm time.Duration
	fail  bool
	delay time.Duration
}

// draw decides the faults of one request: a storm first, then the error rate, then the latency.
func (c *Chaos) draw() outcome {
	c.mu.RLock()
	f, stormLeft := c.f, c.stormUntil.Sub(c.now())
	c.mu.RUnlock()
	switch {
	case stormLeft > 0:
		return outcome{storm: stormLeft}
	case f.ErrorRate > 0 && c.float() < f.ErrorRate:
		return outcome{fail: true}
	case f.Latency > 0 && (f.LatencyRate == 0 || c.float() < f.LatencyRate):
		return outcome{delay: time.Duration(f.Latency)}
	}
	return outcome{}
}

// wait sleeps d, or less if ctx ends first; it reports whether the whole delay passed.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Middleware applies the faults to next: a storm answers 503, then the error rate 500, then the
// latency delays the request (ending early, with no answer, if the caller gives up).
func (c *Chaos) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o := c.draw()
		switch {
		case o.storm > 0:
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(o.storm.Round(time.Second)/time.Second))))
			problem.Write(w, http.StatusServiceUnavailable, "", "injected 503 storm")
			return
		case o.fail:
			problem.Write(w, http.StatusInternalServerError, "", "injected error")
			return
		case o.delay > 0 && !wait(r.Context(), o.delay):
			return
		}
		next.ServeHTTP(w, r)
	})
}

// grpcFault applies the faults to one gRPC call, as Middleware does to an HTTP request: a storm
// answers UNAVAILABLE (the instance is overloaded; a client tries another), the error rate INTERNAL,
// and the latency delays the call (ending with the context's error if the caller gives up).
func (c *Chaos) grpcFault(ctx context.Context) error {
	o := c.draw()
	switch {
	case o.storm > 0:
		return status.Error(codes.Unavailable, "injected storm")
	case o.fail:
		return status.Error(codes.Internal, "injected error")
	case o.delay > 0 && !wait(ctx, o.delay):
		return status.FromContextError(ctx.Err()).Err()
	}
	return nil
}

func (c *Chaos) get(w http.ResponseWriter, _ *http.Request) {
	shop.WriteJSON(w, http.StatusOK, c.Faults())
}

func (c *Chaos) put(w http.ResponseWriter, r *http.Request) {
	var f Faults
	if !httpx.Bind(w, r, &f) {
		return
	}
	c.Set(f)
	shop.WriteJSON(w, http.StatusOK, c.Faults())
}

func (c *Chaos) clear(w http.ResponseWriter, _ *http.Request) {
	c.Set(Faults{})
	w.WriteHeader(http.StatusNoContent)
}
