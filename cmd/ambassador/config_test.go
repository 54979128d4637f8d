package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudchassis/kit/config"
)

func TestConfigProblemsAreReportedTogether(t *testing.T) {
	_, _, err := newService(t, testEnv("AMBASSADOR_ROUTES", "*,a b", "AMBASSADOR_LOCAL_NAME", "py",
		"AMBASSADOR_LOCAL_HEALTH", "health", "AMBASSADOR_MAX_SERVICES", "0"))
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *config.Error, got %v", err)
	}
	for _, want := range []string{"* stands alone", `"a b" is not a service name`, "AMBASSADOR_LOCAL_ADDR: required with AMBASSADOR_LOCAL_NAME",
		`AMBASSADOR_LOCAL_HEALTH="health": must be a path`, "AMBASSADOR_MAX_SERVICES"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// A listed service that cannot work fails the start, as any Chassis client declared before Run.
func TestListedServiceWithoutInstancesFailsTheStart(t *testing.T) {
	_, svc, err := newService(t, testEnv("AMBASSADOR_ROUTES", "pricing"))
	if err != nil {
		t.Fatal(err)
	}
	err = svc.Run(t.Context())
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "DISCOVERY_STATIC_PRICING") {
		t.Fatalf("Run: %v, want a *config.Error naming DISCOVERY_STATIC_PRICING", err)
	}
}

func TestReadinessIncludesTheLocalService(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	var checks atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
			return
		}
		checks.Add(1)
		if !healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(app.Close)
	amb := startAmbassador(t, testEnv("AMBASSADOR_LOCAL_NAME", "app", "AMBASSADOR_LOCAL_ADDR", app.Listener.Addr().String(),
		"AMBASSADOR_LOCAL_HEALTH", "/health"))
	readyz := "http://" + amb.svc.AdminAddr() + "/readyz"
	if resp, body := get(t, readyz); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"local app"`) {
		t.Fatalf("/readyz: %d %s, want 200 with the local check", resp.StatusCode, body)
	}
	if checks.Load() == 0 {
		t.Fatal("the local service's health path was not asked")
	}
	healthy.Store(false)
	deadline := time.Now().Add(5 * time.Second) // checks are cached for a second
	for {
		resp, body := get(t, readyz)
		if resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), "answered 503") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %s after the local service turned unhealthy", resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// An ambassador serves its own node: without HOST it listens on loopback only, not on every
// interface as a chassis service does.
func TestListensOnLoopbackByDefault(t *testing.T) {
	env := testEnv()
	delete(env, "HOST")
	lookup := loopbackByDefault(config.MapLookup(env))
	if v, ok := lookup("HOST"); !ok || v != "127.0.0.1" {
		t.Fatalf("HOST = %q, %v; want 127.0.0.1", v, ok)
	}
	env["HOST"] = "0.0.0.0"
	if v, _ := lookup("HOST"); v != "0.0.0.0" {
		t.Fatalf("HOST = %q; an explicit value must win", v)
	}
	if v, ok := lookup("PORT"); !ok || v != "0" {
		t.Fatalf("PORT = %q, %v; other variables pass through", v, ok)
	}
}

// DNS discovery without Consul has no list of services: AMBASSADOR_ROUTES=* would have nothing to
// bound it and must fail the start, not answer 404 to everything.
func TestWildcardWithDNSDiscoveryFailsTheStart(t *testing.T) {
	_, _, err := newService(t, testEnv("AMBASSADOR_ROUTES", "*", "DISCOVERY", "dns", "DISCOVERY_DNS_SERVER", "127.0.0.1:53"))
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "AMBASSADOR_ROUTES") {
		t.Fatalf("setup: %v, want a *config.Error naming AMBASSADOR_ROUTES", err)
	}
}

// The local service's Consul check reaches the ambassador at ADVERTISE_ADDRESS when it is set, as a
// chassis service's does: an agent in another network namespace cannot reach 127.0.0.1.
func TestLocalCheckUsesTheAdvertisedAddress(t *testing.T) {
	for _, tc := range []struct{ advertise, wantHost string }{{"", "127.0.0.1"}, {"10.1.2.3", "10.1.2.3"}} {
		env := testEnv("AMBASSADOR_LOCAL_NAME", "app", "AMBASSADOR_LOCAL_ADDR", "127.0.0.1:8000")
		if tc.advertise != "" {
			env["ADVERTISE_ADDRESS"] = tc.advertise
		}
		amb := startAmbassador(t, env)
		reg, err := amb.a.local.registration(amb.svc)
		if err != nil {
			t.Fatal(err)
		}
		_, adminPort, _ := strings.Cut(amb.svc.AdminAddr(), ":")
		if want := "http://" + tc.wantHost + ":" + adminPort + "/readyz"; reg.CheckURL != want {
			t.Errorf("ADVERTISE_ADDRESS=%q: check %q, want %q", tc.advertise, reg.CheckURL, want)
		}
	}
}
