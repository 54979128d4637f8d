package consul_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/consul"
	"github.com/cloudchassis/kit/discovery/discoverytest"
)

// fakeServer starts the discoverytest fake Consul on a loopback port and returns it with a Client.
func fakeServer(t testing.TB) (*discoverytest.Server, *consul.Client) {
	t.Helper()
	s := discoverytest.NewServer()
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, newClient(t, s.Addr())
}

func newClient(t testing.TB, addr string) *consul.Client {
	t.Helper()
	cfg, err := consul.ConfigFromEnv(func(k string) (string, bool) {
		if k == "CONSUL_HTTP_ADDR" {
			return addr, true
		}
		return "", false
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cfg.Transport.CloseIdleConnections() })
	return consul.NewClient(c)
}

// readyApp is an admin endpoint whose /readyz answer the test controls.
func readyApp(t testing.TB) (checkURL string, port int, ready *atomic.Bool) {
	t.Helper()
	ready = &atomic.Bool{}
	ready.Store(true)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(app.Close)
	u, _ := url.Parse(app.URL)
	port, _ = strconv.Atoi(u.Port())
	return app.URL + "/readyz", port, ready
}

func waitFor(t *testing.T, w discovery.Watcher, what string, cond func(discovery.Snapshot) bool) discovery.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var after uint64
	for {
		s, err := w.Next(ctx, after)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if cond(s) {
			return s
		}
		after = s.Version
	}
}

func TestRegistrarAndWatchOverFakeConsul(t *testing.T) {
	srv, c := fakeServer(t)
	checkURL, port, ready := readyApp(t)
	r := newRegistry(t, c)
	w := watch(t, r, "catalog")

	reg, err := consul.NewRegistrar(c, consul.Registration{
		Name: "catalog", Address: "127.0.0.1", Port: port, CheckURL: checkURL, CheckInterval: 50 * time.Millisecond,
	}, consul.WithResyncInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Deregister(context.Background()) })
	waitFor(t, w, "empty service", func(s discovery.Snapshot) bool { return s.Err == nil && len(s.Instances) == 0 })
	if err := reg.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, w, "registration", func(s discovery.Snapshot) bool { return len(s.Instances) == 1 })
	if in := s.Instances[0]; in.ID != reg.ID() || in.Port != port || in.Weight != 1 {
		t.Errorf("instance %+v", in)
	}

	// Health matters: the fake probes /readyz.
	ready.Store(false)
	waitFor(t, w, "failing check to remove the instance", func(s discovery.Snapshot) bool { return len(s.Instances) == 0 })
	ready.Store(true)
	waitFor(t, w, "passing check to restore it", func(s discovery.Snapshot) bool { return len(s.Instances) == 1 })

	// The agent loses the service: the Registrar's resync registers it again.
	srv.RemoveService(reg.ID())
	waitFor(t, w, "re-registration", func(s discovery.Snapshot) bool { return len(s.Instances) == 1 && s.Instances[0].ID == reg.ID() })

	if err := reg.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, "deregistration", func(s discovery.Snapshot) bool { return len(s.Instances) == 0 })
	if _, ok := srv.Services()[reg.ID()]; ok {
		t.Error("service still registered")
	}
}

func TestWatchSurvivesFakeOutage(t *testing.T) {
	srv, c := fakeServer(t)
	if err := c.Register(t.Context(), &api.AgentServiceRegistration{ID: "p1", Name: "pricing", Port: 1, Address: "10.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	r := newRegistry(t, c, consul.WithBackoff(50*time.Millisecond, 400*time.Millisecond))
	w := watch(t, r, "pricing")
	s := waitFor(t, w, "instance", func(s discovery.Snapshot) bool { return len(s.Instances) == 1 })

	before := srv.Requests(discoverytest.RouteHealth)
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, w, "error snapshot", func(s discovery.Snapshot) bool { return s.Err != nil })
	if len(s.Instances) != 1 {
		t.Fatalf("outage dropped the list: %+v", s)
	}
	time.Sleep(2 * time.Second)
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, w, "recovery", func(s discovery.Snapshot) bool { return s.Err == nil })
	if len(s.Instances) != 1 {
		t.Fatalf("after recovery: %+v", s)
	}
	// Refused connections never reach the server, so count the recovery traffic only: one query
	// confirms the list and the next one blocks.
	if n := srv.Requests(discoverytest.RouteHealth) - before; n > 3 {
		t.Errorf("%d health requests reached the server around the outage", n)
	}

	srv.SetFailure(http.StatusInternalServerError)
	start := srv.Requests(discoverytest.RouteHealth)
	waitFor(t, w, "500 snapshot", func(s discovery.Snapshot) bool { return s.Err != nil })
	time.Sleep(2 * time.Second)
	// Backoff 50 ms doubling to 400 ms with full jitter: at most ~15 attempts in 2 s; a loop would make
	// thousands.
	if n := srv.Requests(discoverytest.RouteHealth) - start; n > 25 {
		t.Errorf("%d requests in 2 s against a failing server", n)
	}
	srv.SetFailure(0)
	waitFor(t, w, "recovery after 500s", func(s discovery.Snapshot) bool { return s.Err == nil && len(s.Instances) == 1 })
}

func TestClientNotFoundMapping(t *testing.T) {
	_, c := fakeServer(t)
	ok, err := c.Registered(t.Context(), "nope")
	if ok || err != nil {
		t.Errorf("Registered(unknown) = %v, %v", ok, err)
	}
	if err := c.Deregister(t.Context(), "nope"); err != nil {
		t.Errorf("Deregister(unknown) = %v", err)
	}
	err = c.UpdateTTL(t.Context(), "nope", "", api.HealthPassing)
	var se api.StatusError
	if !errors.As(err, &se) || se.Code != 404 {
		t.Errorf("UpdateTTL(unknown) = %v", err)
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{
		"CONSUL_HTTP_ADDR": "https://consul.internal:8501", "CONSUL_HTTP_TOKEN": "t", "CONSUL_HTTP_SSL_VERIFY": "false",
		"CONSUL_HTTP_AUTH": "u:p", "CONSUL_CACERT": "/ca.pem",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := consul.ConfigFromEnv(lookup)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Address != "consul.internal:8501" || cfg.Scheme != "https" || cfg.Token != "t" || !cfg.TLSConfig.InsecureSkipVerify ||
		cfg.HttpAuth.Username != "u" || cfg.HttpAuth.Password != "p" || cfg.TLSConfig.CAFile != "/ca.pem" {
		t.Errorf("config %+v", cfg)
	}
	cfg, err = consul.ConfigFromEnv(nil)
	if err != nil || cfg.Address != consul.DefaultAddress || cfg.Scheme != "http" {
		t.Errorf("defaults: %+v, %v", cfg, err)
	}
	env = map[string]string{"CONSUL_HTTP_ADDR": "ftp://x:1", "CONSUL_HTTP_SSL": "maybe", "CONSUL_CLIENT_CERT": "/c.pem"}
	_, err = consul.ConfigFromEnv(lookup)
	if err == nil {
		t.Fatal("want error")
	}
	for _, frag := range []string{"CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL=", "CONSUL_CLIENT_KEY"} {
		if !strings.Contains(err.Error(), frag) {
			t.Errorf("error %q does not mention %s", err, frag)
		}
	}
}

func ExampleRegistry() {
	// A fake Consul stands in for the local agent here; in production use NewClient over
	// api.NewClient(consul.ConfigFromEnv(os.LookupEnv)).
	srv := discoverytest.NewServer()
	if err := srv.Start("127.0.0.1:0"); err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	cfg, _ := consul.ConfigFromEnv(func(string) (string, bool) { return "", false })
	cfg.Address = srv.Addr()
	apiClient, _ := api.NewClient(cfg)
	defer cfg.Transport.CloseIdleConnections()
	client := consul.NewClient(apiClient)

	reg, _ := consul.NewRegistrar(client, consul.Registration{
		Name: "pricing", ID: "pricing-1", Address: "127.0.0.1", Port: 8080, TTL: 10 * time.Second,
	})
	registry, _ := consul.NewRegistry(client)
	defer registry.Close()
	w, _ := registry.Watch("pricing")
	defer w.Close()

	ctx := context.Background()
	s, _ := w.Next(ctx, 0)
	fmt.Println("before:", len(s.Instances))
	_ = reg.Register(ctx) // once the service is ready
	s, _ = w.Next(ctx, s.Version)
	fmt.Println("after:", s.Instances[0].ID, s.Instances[0].HostPort())
	_ = reg.Deregister(ctx) // at the start of the drain
	s, _ = w.Next(ctx, s.Version)
	fmt.Println("drained:", len(s.Instances))
	// Output:
	// before: 0
	// after: pricing-1 127.0.0.1:8080
	// drained: 0
}

func FuzzConfigFromEnv(f *testing.F) {
	for _, s := range []string{"127.0.0.1:8500", "https://c:8501", "unix:///tmp/consul.sock", "http://[::1]:1/", "x", ":0", "ftp://a:1"} {
		f.Add(s, "true")
	}
	f.Fuzz(func(t *testing.T, addr, ssl string) {
		env := map[string]string{"CONSUL_HTTP_ADDR": addr, "CONSUL_HTTP_SSL": ssl}
		cfg, err := consul.ConfigFromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			return
		}
		if cfg.Address == "" || (cfg.Scheme != "http" && cfg.Scheme != "https") {
			t.Fatalf("accepted %q/%q as %+v", addr, ssl, cfg)
		}
	})
}
