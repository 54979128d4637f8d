package chassis_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/resilience"
)

// TestClientRetriesPastAFailingInstance: one of two instances answers 503; GETs still succeed, and
// the deadline travels to the callee.
func TestClientRetriesPastAFailingInstance(t *testing.T) {
	var bad, good atomic.Int64
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bad.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		good.Add(1)
		if r.Header.Get(resilience.TimeoutHeader) == "" {
			t.Error("no propagated deadline")
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer healthy.Close()

	addrs := strings.TrimPrefix(failing.URL, "http://") + "," + strings.TrimPrefix(healthy.URL, "http://")
	svc, err := chassis.New("caller", chassis.WithEnv(env("DISCOVERY_STATIC_PRICING", addrs, "CLIENT_PRICING_RETRIES", "3")))
	if err != nil {
		t.Fatal(err)
	}
	c := svc.Client("pricing")
	start(t, svc)
	for range 50 {
		req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://pricing/p", nil)
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("%d %q", res.StatusCode, b)
		}
	}
	if good.Load() != 50 {
		t.Fatalf("healthy instance served %d of 50", good.Load())
	}
	t.Logf("failing instance saw %d attempts for 50 calls", bad.Load())
}

func TestBadClientVariableFailsRun(t *testing.T) {
	svc, err := chassis.New("caller", chassis.WithEnv(env("DISCOVERY_STATIC_PRICING", "127.0.0.1:1", "CLIENT_PRICING_TIMEOUT", "soon")))
	if err != nil {
		t.Fatal(err)
	}
	svc.Client("pricing")
	err = svc.Run(context.Background())
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), `CLIENT_PRICING_TIMEOUT="soon": not a duration`) {
		t.Fatalf("Run = %v", err)
	}
}

func TestClientSettingsInCodeAndEnvironment(t *testing.T) {
	var seen []string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get(resilience.TimeoutHeader))
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer backend.Close()
	svc, err := chassis.New("caller", chassis.WithEnv(env("DISCOVERY_STATIC_PRICING", strings.TrimPrefix(backend.URL, "http://"),
		"CLIENT_PRICING_RETRIES", "0")))
	if err != nil {
		t.Fatal(err)
	}
	c := svc.Client("pricing", chassis.WithResilience(func(c *resilience.Config) { c.Retries = 4 }))
	start(t, svc)
	res, err := c.Get("http://pricing/x")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if len(seen) != 1 {
		t.Fatalf("CLIENT_PRICING_RETRIES=0 must override the code's 4: %d attempts", len(seen))
	}
}
