package chassis_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/internal/consultest"
)

func TestClientWithStaticDiscovery(t *testing.T) {
	backend, err := chassis.New("pricing", chassis.WithEnv(env()))
	if err != nil {
		t.Fatal(err)
	}
	backend.HandleFunc("GET /price/{sku}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "42 "+r.PathValue("sku"))
	})
	start(t, backend)

	front, err := chassis.New("gateway", chassis.WithEnv(env("DISCOVERY_STATIC_PRICING", backend.Addr())))
	if err != nil {
		t.Fatal(err)
	}
	pricing := front.Client("pricing")
	if front.Client("pricing") != pricing {
		t.Fatal("clients are not cached by name")
	}
	front.HandleFunc("GET /quote/{sku}", func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), "GET", "http://pricing/price/"+r.PathValue("sku"), nil)
		res, err := pricing.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer res.Body.Close()
		_, _ = io.Copy(w, res.Body)
	})
	start(t, front)
	if res, body := get(t, "http://"+front.Addr()+"/quote/abc", nil); res.StatusCode != 200 || body != "42 abc" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}

	// An unknown service gives a clear error, not a hang.
	res, err := front.Client("inventory").Get("http://inventory/x")
	if err == nil {
		res.Body.Close()
		t.Fatal("want an error")
	}
	if !strings.Contains(err.Error(), "DISCOVERY_STATIC_INVENTORY") {
		t.Fatalf("error should name the variable to set: %v", err)
	}
}

// TestConsulRegistrationFollowsLifecycle runs against a real Consul agent: the instance appears as
// passing only once ready, a client in another service finds it, and it is deregistered at the
// start of the drain, while the listener still serves.
func TestConsulRegistrationFollowsLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	agent := consultest.StartDev(t)
	consulEnv := []string{"CONSUL_HTTP_ADDR", agent.HTTPAddr, "DISCOVERY", "consul"}

	svc, err := chassis.New("inventory", chassis.WithEnv(env(append(consulEnv, "DRAIN_DELAY", "1s", "SERVICE_TAGS", "v1,blue")...)))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleFunc("GET /stock", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "7") })
	cancel, done := runReady(t, svc)

	entries, _, err := agent.Client.Health().Service("inventory", "", true, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("passing instances: %d, %v", len(entries), err)
	}
	e := entries[0].Service
	if e.Address != "127.0.0.1" || !strings.HasSuffix(svc.Addr(), ":"+strconv.Itoa(e.Port)) || strings.Join(e.Tags, ",") != "v1,blue" {
		t.Fatalf("registered %+v, service at %s", e, svc.Addr())
	}

	callStock(t, consulEnv)
	drainDeregisters(t, svc, cancel, done, func() bool {
		entries, _, err := agent.Client.Health().Service("inventory", "", false, nil)
		return err == nil && len(entries) == 0
	})
}

// callStock calls GET /stock of "inventory" from another service that finds it through the
// registry of registryEnv (variable, value, ...), and expects "7".
func callStock(t *testing.T, registryEnv []string) {
	t.Helper()
	caller, err := chassis.New("shop", chassis.WithEnv(env(append(registryEnv, "REGISTER", "false")...)))
	if err != nil {
		t.Fatal(err)
	}
	stock := caller.Client("inventory")
	start(t, caller)
	res, err := stock.Get("http://inventory/stock")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != "7" {
		t.Fatalf("body %q", body)
	}
}

// drainDeregisters stops svc (cancel, as SIGTERM would), expects gone to turn true within its 1 s
// DRAIN_DELAY, and svc to serve /stock meanwhile, then a clean end of Run.
func drainDeregisters(t *testing.T, svc *chassis.Service, cancel context.CancelFunc, done <-chan error, gone func() bool) {
	t.Helper()
	cancel() // SIGTERM
	for deadline := time.Now().Add(900 * time.Millisecond); !gone(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not deregistered within the drain delay")
		}
	}
	// Deregistered, yet still serving during the drain.
	if res, body := get(t, "http://"+svc.Addr()+"/stock", nil); res.StatusCode != 200 || body != "7" {
		t.Fatalf("during drain: %d %q", res.StatusCode, body)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
