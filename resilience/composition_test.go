package resilience

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudchassis/kit/discovery"
)

// fakeLB stands in for discovery/lb: round robin over per-instance transports built by
// Dependency.Instance, skipping those whose Available() is false, recording every pick.
type fakeLB struct {
	mu    sync.Mutex
	ids   []string
	rts   []http.RoundTripper
	next  int
	picks []string
}

func newFakeLB(d *Dependency, backend *recorder) *fakeLB {
	lb := &fakeLB{}
	for _, id := range backend.instances {
		lb.ids = append(lb.ids, id)
		lb.rts = append(lb.rts, d.Instance(id, backendFor(backend, id)))
	}
	return lb
}

// backendFor sends every attempt to one instance of the recorder.
func backendFor(r *recorder, id string) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		one := &recorder{instances: []string{id}, steps: r.steps, open: map[string]bool{}}
		r.mu.Lock()
		one.calls = slices.Clone(r.calls)
		r.mu.Unlock()
		resp, err := one.RoundTrip(req)
		r.mu.Lock()
		r.calls = append(r.calls, id)
		r.headers = append(r.headers, one.headers...)
		r.mu.Unlock()
		return resp, err
	})
}

func (lb *fakeLB) RoundTrip(req *http.Request) (*http.Response, error) {
	lb.mu.Lock()
	var rt http.RoundTripper
	for range lb.ids {
		i := lb.next % len(lb.ids)
		lb.next++
		if a, ok := lb.rts[i].(discovery.InstanceTransport); ok && !a.Available() {
			continue
		}
		rt = lb.rts[i]
		lb.picks = append(lb.picks, lb.ids[i])
		break
	}
	lb.mu.Unlock()
	if rt == nil {
		return nil, errNoInstances
	}
	return rt.RoundTrip(req)
}

func TestCompositionOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Timeout = time.Second
		cfg.AttemptTimeout = 100 * time.Millisecond
		cfg.Retries = 2
		cfg.RetryBaseDelay = 0
		cfg.BreakerFailures = 2
		cfg.BreakerDelay = 10 * time.Second
		d, err := NewDependency("pricing", cfg)
		if err != nil {
			t.Fatal(err)
		}
		backend := newRecorder("a", "b", "c")
		backend.steps["a"] = []step{{err: syscall.ECONNRESET}}
		backend.steps["b"] = []step{{delay: time.Hour}} // stalls: only the per-attempt timeout saves the call
		lb := newFakeLB(d, backend)
		client := d.Wrap(lb)

		start := time.Now()
		resp, err := get(t, t.Context(), client, http.MethodGet, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := readClose(t, resp); got != "c" {
			t.Fatalf("answered by %q", got)
		}
		// Retry is above the balancer: each attempt re-picked (a, then b, then c) ...
		if want := []string{"a", "b", "c"}; !slices.Equal(lb.picks, want) {
			t.Fatalf("picks %v, want %v", lb.picks, want)
		}
		// ... and the per-attempt timeout is below it: the stalled b cost 100ms, not the overall 1s.
		if el := time.Since(start); el != 100*time.Millisecond {
			t.Fatalf("call took %v, want the 100ms attempt timeout", el)
		}
		// Deadline propagation is innermost: each attempt carries its own (attempt) budget.
		for i, h := range backend.headers {
			ms, _ := strconv.Atoi(h.Get(TimeoutHeader))
			if ms <= 0 || ms > 95 {
				t.Fatalf("attempt %d sent %s=%q, want <= 95 (100ms attempt - 5ms margin)", i, TimeoutHeader, h.Get(TimeoutHeader))
			}
		}
		// Second call: a fails again and its breaker (2 failures) opens; b times out and opens too
		// on the next failure. After that the balancer skips them: only c is picked.
		for range 4 {
			resp, err := get(t, t.Context(), client, http.MethodGet, "")
			if err != nil {
				t.Fatal(err)
			}
			readClose(t, resp)
		}
		lb.picks = nil
		for range 6 {
			resp, err := get(t, t.Context(), client, http.MethodGet, "")
			if err != nil {
				t.Fatal(err)
			}
			readClose(t, resp)
		}
		if want := []string{"c", "c", "c", "c", "c", "c"}; !slices.Equal(lb.picks, want) {
			t.Fatalf("picks with a and b breakers open: %v, want only c", lb.picks)
		}
	})
}

func TestCompositionHedgesShareBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Retries = 1
		cfg.RetryBaseDelay = 0
		cfg.HedgeDelay = 10 * time.Millisecond
		cfg.BudgetRatio = 0
		cfg.BudgetMinPerSecond = 0.1 // one token per 10 s window
		cfg.BreakerFailures = 0
		cfg.DependencyBreakerRate = 0
		d, err := NewDependency("pricing", cfg)
		if err != nil {
			t.Fatal(err)
		}
		backend := newRecorder("a", "b")
		backend.steps["a"] = []step{{delay: 50 * time.Millisecond}}
		backend.steps["b"] = []step{{delay: 50 * time.Millisecond}}
		lb := newFakeLB(d, backend)
		client := d.Wrap(lb)

		// Call 1: a is slow, after 10ms a hedge spends the only token and goes to b.
		resp, err := get(t, t.Context(), client, http.MethodGet, "")
		if err != nil {
			t.Fatal(err)
		}
		readClose(t, resp)
		if want := []string{"a", "b"}; !slices.Equal(lb.picks, want) {
			t.Fatalf("picks %v, want %v (first attempt and its hedge)", lb.picks, want)
		}
		if d.budget.Tokens() != 0 {
			t.Fatalf("hedge did not spend the budget: %v", d.budget.Tokens())
		}
		// Call 2: no token, no hedge.
		resp, err = get(t, t.Context(), client, http.MethodGet, "")
		if err != nil {
			t.Fatal(err)
		}
		readClose(t, resp)
		if len(lb.picks) != 3 {
			t.Fatalf("picks %v: a hedge was sent without budget", lb.picks)
		}
		// Call 3: the instance answers 503; the retry is refused by the same, empty budget.
		backend.mu.Lock()
		backend.steps["b"] = []step{{status: 503}}
		backend.mu.Unlock()
		resp, err = get(t, t.Context(), client, http.MethodGet, "")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || len(lb.picks) != 4 {
			t.Fatalf("status %d picks %v: the retry should have been refused by the budget the hedge used", resp.StatusCode, lb.picks)
		}
	})
}

func TestDependencyBreakerRejectsFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Retries = 0
		cfg.BreakerFailures = 0
		cfg.DependencyBreakerMinCalls = 4
		d, _ := NewDependency("pricing", cfg)
		backend := newRecorder("a")
		backend.steps["a"] = []step{{status: 503}}
		client := d.Wrap(d.attempt(backend, ""))
		for range 4 {
			resp, err := get(t, t.Context(), client, http.MethodGet, "")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		_, err := get(t, t.Context(), client, http.MethodGet, "")
		var re *RejectedError
		if !errors.Is(err, ErrBreakerOpen) || !errors.As(err, &re) || re.Instance != "" {
			t.Fatalf("got %v, want a dependency ErrBreakerOpen", err)
		}
		if n := len(backend.Calls()); n != 4 {
			t.Fatalf("%d calls reached the dependency", n)
		}
	})
}
