package pricing

import (
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

// Middleware applies the faults to next: a storm answers 503, then the error rate 500, then the
// latency delays the request (ending early, with no answer, if the caller gives up).
func (c *Chaos) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.RLock()
		f, stormLeft := c.f, c.stormUntil.Sub(c.now())
		c.mu.RUnlock()
		if stormLeft > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(stormLeft.Round(time.Second)/time.Second))))
			problem.Write(w, http.StatusServiceUnavailable, "", "injected 503 storm")
			return
		}
		if f.ErrorRate > 0 && c.float() < f.ErrorRate {
			problem.Write(w, http.StatusInternalServerError, "", "injected error")
			return
		}
		if f.Latency > 0 && (f.LatencyRate == 0 || c.float() < f.LatencyRate) {
			t := time.NewTimer(time.Duration(f.Latency))
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		next.ServeHTTP(w, r)
	})
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
