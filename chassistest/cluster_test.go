package chassistest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/chassistest"
)

// pricing answers a fixed price.
func pricing(svc *chassis.Service) error {
	svc.HandleFunc("GET /prices/{sku}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s=42", r.PathValue("sku"))
	})
	return nil
}

// cart calls pricing with a 1 s deadline and maps the outcome to a status: the scenario the
// synctest test below times out.
func cart(svc *chassis.Service) error {
	client := svc.Client("pricing")
	svc.HandleFunc("GET /cart/{sku}", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://pricing/prices/"+r.PathValue("sku"), nil)
		res, err := client.Do(req)
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			http.Error(w, "pricing timed out", http.StatusGatewayTimeout)
			return
		case err != nil:
			http.Error(w, "pricing unreachable: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			http.Error(w, fmt.Sprintf("pricing said %d", res.StatusCode), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "cart: %s", b)
	})
	return nil
}

func TestClusterCallsFaultsAndPartitions(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts []chassistest.Option
	}{{"sockets", nil}, {"memory", []chassistest.Option{chassistest.InMemory()}}} {
		t.Run(mode.name, func(t *testing.T) {
			c := chassistest.NewCluster(t, mode.opts...)
			p := c.Start("pricing", pricing)
			ct := c.Start("cart", cart)

			if res, body := ct.Get(t, "/cart/apple"); res.StatusCode != 200 || body != "cart: apple=42" {
				t.Fatalf("healthy call: %d %q", res.StatusCode, body)
			}
			// The call is traced on both sides: one trace.
			client := ct.AssertSpan(t, "GET")
			server := p.AssertSpan(t, "GET /prices/{sku}")
			if client != nil && server != nil && client.SpanContext().TraceID() != server.SpanContext().TraceID() {
				t.Error("client and server spans are in different traces")
			}

			// The client retries: a dependency that fails twice, then recovers, costs three requests.
			link := c.Link("cart", "pricing")
			link.Set(chassistest.Script(chassistest.Fail(503), chassistest.Reset(), chassistest.OK()))
			if res, body := ct.Get(t, "/cart/apple"); res.StatusCode != 200 || body != "cart: apple=42" {
				t.Errorf("scripted recovery: %d %q", res.StatusCode, body)
			}
			if n := link.Requests(); n != 4 {
				t.Errorf("link saw %d requests, want 4 (1 healthy + 3 scripted)", n)
			}
			c.Partition("cart", "pricing")
			if res, body := ct.Get(t, "/cart/apple"); res.StatusCode != 502 || !strings.Contains(body, "no route to host") {
				t.Errorf("partitioned: %d %q", res.StatusCode, body)
			}
			// The test still reaches pricing: only the link between the services is cut.
			if res, _ := p.Get(t, "/prices/apple"); res.StatusCode != 200 {
				t.Errorf("test to pricing during the partition: %d", res.StatusCode)
			}
			c.Heal()
			if res, _ := ct.Get(t, "/cart/apple"); res.StatusCode != 200 {
				t.Errorf("after Heal: %d", res.StatusCode)
			}
			if n := p.ServerRequests(t, "/prices/{sku}"); n != 4 { // healthy, after script, test's, healed
				t.Errorf("pricing served %d requests, want 4", n)
			}

			// Last, as it makes the client eject pricing for a while.
			link.Set(chassistest.Fail(http.StatusServiceUnavailable))
			if res, body := ct.Get(t, "/cart/apple"); res.StatusCode != 502 || !strings.Contains(body, "pricing said 503") {
				t.Errorf("persistent 503: %d %q", res.StatusCode, body)
			}
		})
	}
}

func TestClusterBalancesOverReplicas(t *testing.T) {
	c := chassistest.NewCluster(t, chassistest.InMemory())
	p1 := c.Start("pricing", pricing)
	p2 := c.Start("pricing", pricing)
	ct := c.Start("cart", cart)
	for range 20 {
		if res, _ := ct.Get(t, "/cart/x"); res.StatusCode != 200 {
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	n1, n2 := p1.ServerRequests(t, "/prices/{sku}"), p2.ServerRequests(t, "/prices/{sku}")
	if n1+n2 != 20 || n1 == 0 || n2 == 0 {
		t.Fatalf("replicas served %d and %d of 20", n1, n2)
	}
	// A stopped replica deregisters, and the calls go to the other.
	p1.Stop(t)
	for range 5 {
		if res, body := ct.Get(t, "/cart/x"); res.StatusCode != 200 {
			t.Fatalf("after stopping a replica: %d %q", res.StatusCode, body)
		}
	}
	if got := p2.ServerRequests(t, "/prices/{sku}"); got != n2+5 {
		t.Fatalf("the remaining replica served %d, want %d", got, n2+5)
	}
}

func TestDependenciesStartedLater(t *testing.T) {
	c := chassistest.NewCluster(t, chassistest.InMemory())
	ct := c.Start("cart", cart)
	c.Start("pricing", pricing)
	waitFor(t, func() bool { res, _ := ct.Get(t, "/cart/a"); return res.StatusCode == 200 })
}

// TestLateDependencyIsWired: a service whose dependency was not in the cluster when it started
// still calls it through the cluster's links, in memory and partitionable.
func TestLateDependencyIsWired(t *testing.T) {
	c := chassistest.NewCluster(t, chassistest.InMemory())
	ct := c.Start("cart", cart)
	c.Start("pricing", pricing)
	waitFor(t, func() bool { res, _ := ct.Get(t, "/cart/a"); return res.StatusCode == 200 })
	c.Partition("cart", "pricing")
	if res, _ := ct.Get(t, "/cart/a"); res.StatusCode == 200 {
		t.Fatal("the partition did not cut a dependency created before its peer was known")
	}
	c.Heal()
	if res, body := ct.Get(t, "/cart/a"); res.StatusCode != 200 {
		t.Fatalf("after Heal: %d %q", res.StatusCode, body)
	}
}

// waitFor polls cond for up to 5 s; for things that happen on another goroutine's schedule (a
// balancer learning about a new instance) in tests that run on the real clock.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var _ = syscall.ECONNRESET
