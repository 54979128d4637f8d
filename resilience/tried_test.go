package resilience_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/resilience"
)

// hostLog answers 503 from the instances in bad and 200 from the others, after delay for slow ones,
// and records, per call (header "Call"), the instances each attempt went to.
type hostLog struct {
	bad, slow map[string]bool
	mu        sync.Mutex
	calls     map[string][]string
}

func (h *hostLog) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.calls[r.Header.Get("Call")] = append(h.calls[r.Header.Get("Call")], r.URL.Host)
	h.mu.Unlock()
	if h.slow[r.URL.Host] {
		select {
		case <-time.After(time.Second):
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
	code := http.StatusOK
	if h.bad[r.URL.Host] {
		code = http.StatusServiceUnavailable
	}
	return &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader("ok")), Request: r, Header: http.Header{}}, nil
}

// Retries and hedges go to instances the call has not tried: the balancer takes the call's Tried
// directly (discovery.TriedRoundTripper).
func TestAttemptsAvoidTriedInstances(t *testing.T) {
	for _, hedge := range []bool{false, true} {
		name := map[bool]string{true: "hedge", false: "retry"}[hedge]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				backend := &hostLog{bad: map[string]bool{"10.0.0.1:80": true}, slow: map[string]bool{}, calls: map[string][]string{}}
				cfg := resilience.DefaultConfig()
				cfg.RetryBaseDelay, cfg.BreakerFailures, cfg.BudgetMinPerSecond = 0, 0, 1000
				cfg.AttemptTimeout, cfg.Timeout = 0, 0
				if hedge {
					backend.bad, backend.slow = map[string]bool{}, map[string]bool{"10.0.0.1:80": true}
					cfg.HedgeDelay, cfg.MaxHedges = 10*time.Millisecond, 2
				}
				dep, err := resilience.NewDependency("pricing", cfg)
				if err != nil {
					t.Fatal(err)
				}
				bal, err := lb.NewFixed("pricing", []discovery.Instance{
					{ID: "a", Address: "10.0.0.1", Port: 80}, {ID: "b", Address: "10.0.0.2", Port: 80}, {ID: "c", Address: "10.0.0.3", Port: 80},
				}, lb.WithBaseTransport(backend), lb.WithPolicy(lb.Random),
					lb.WithInstancePolicy(dep),
					lb.WithClassifier(func(*http.Response, error) discovery.Class { return discovery.Class{} })) // no ejection: a stays in the picks
				if err != nil {
					t.Fatal(err)
				}
				defer bal.Close()
				rt := dep.Wrap(lb.NewTransport(bal))
				for i := range 90 {
					req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://pricing/x", nil)
					req.Header.Set("Call", strings.Repeat("x", i+1))
					resp, err := rt.RoundTrip(req)
					if err != nil {
						t.Fatal(err)
					}
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("call %d: status %d", i, resp.StatusCode)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				sawSecond := 0
				for call, hosts := range backend.calls {
					seen := map[string]bool{}
					for _, h := range hosts {
						if seen[h] {
							t.Fatalf("call %d went to %s twice: %v", len(call), h, hosts)
						}
						seen[h] = true
					}
					if len(hosts) > 1 {
						sawSecond++
					}
				}
				if sawSecond < 10 {
					t.Fatalf("only %d of 90 calls made a second attempt: %v", sawSecond, backend.calls)
				}
			})
		})
	}
}
