package chassistest_test

import (
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/chassistest"
)

// A dependency that never answers: cart's 1 s deadline expires and it answers 504. In a synctest
// bubble, with the in-memory transport, the second passes on the bubble's clock: the test takes
// milliseconds of wall time and the measured latency is exactly the deadline.
func TestDependencyTimeoutInSynctest(t *testing.T) {
	c := chassistest.NewCluster(t, chassistest.InMemory())
	c.Start("pricing", pricing)
	ct := c.Start("cart", cart)
	c.Link("cart", "pricing").Set(chassistest.Blackhole())

	wall := time.Now()
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		res, body := ct.Get(t, "/cart/apple")
		if res.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, "pricing timed out") {
			t.Errorf("got %d %q, want 504", res.StatusCode, body)
		}
		if took := time.Since(start); took != time.Second {
			t.Errorf("answered after %v of bubble time, want exactly the 1s deadline", took)
		}
	})
	if took := time.Since(wall); took > 500*time.Millisecond {
		// Not a speed assertion: a real second would mean the fake clock was not in use.
		t.Errorf("took %v of wall time; the timeout did not run on synctest's clock", took)
	}
	if n := ct.ServerRequests(t, "/cart/{sku}", attribute.Int("http.response.status_code", 504)); n != 1 {
		t.Errorf("cart recorded %d 504s, want 1", n)
	}
	if n := c.Link("cart", "pricing").Requests(); n == 0 {
		t.Error("the blackholed link saw no request")
	}
}

// Latency and deadlines compose on the bubble's clock too: 300 ms of latency fits in the 1 s deadline,
// 1.5 s does not.
func TestLatencyInSynctest(t *testing.T) {
	c := chassistest.NewCluster(t, chassistest.InMemory())
	c.Start("pricing", pricing)
	ct := c.Start("cart", cart)
	link := c.Link("cart", "pricing")

	synctest.Test(t, func(t *testing.T) {
		link.Set(chassistest.Latency(300 * time.Millisecond))
		start := time.Now()
		if res, _ := ct.Get(t, "/cart/a"); res.StatusCode != 200 {
			t.Errorf("300ms latency: %d", res.StatusCode)
		}
		if took := time.Since(start); took != 300*time.Millisecond {
			t.Errorf("took %v, want 300ms", took)
		}
		link.Set(chassistest.Latency(1500 * time.Millisecond))
		if res, _ := ct.Get(t, "/cart/a"); res.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("1.5s latency: %d, want 504", res.StatusCode)
		}
	})
}

// A handler's own timers run on the bubble's clock when it is served in memory.
func TestHandlerTimersInSynctest(t *testing.T) {
	inst := chassistest.Start(t, "slow", func(svc *chassis.Service) error {
		svc.HandleFunc("GET /wait", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(10 * time.Minute):
				w.WriteHeader(http.StatusOK)
			case <-r.Context().Done():
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})
		return nil
	}, chassistest.InMemory(), chassistest.WithEnv(map[string]string{"HTTP_REQUEST_TIMEOUT": "1h"}))

	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if res, _ := inst.Get(t, "/wait"); res.StatusCode != 200 {
			t.Errorf("status %d", res.StatusCode)
		}
		if took := time.Since(start); took != 10*time.Minute {
			t.Errorf("took %v", took)
		}
	})
}
