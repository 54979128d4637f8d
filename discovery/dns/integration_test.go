package dns_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/consul"
	"github.com/cloudchassis/kit/discovery/dns"
	"github.com/cloudchassis/kit/internal/consultest"
)

// An instance that a Consul agent checks: /readyz answers 200 while ready holds true, else 503.
type app struct {
	port  int
	ready atomic.Bool
	reg   *consul.Registrar
}

func startApp(t *testing.T, c *consul.Client, name string) *app {
	t.Helper()
	a := &app{}
	a.ready.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	a.port, _ = strconv.Atoi(srv.URL[len("http://127.0.0.1:"):])
	var err error
	a.reg, err = consul.NewRegistrar(c, consul.Registration{
		Name: name, Address: "127.0.0.1", Port: a.port, CheckURL: srv.URL + "/readyz",
		CheckInterval: 200 * time.Millisecond, CheckTimeout: time.Second,
	}, consul.WithResyncInterval(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.reg.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.reg.Deregister(t.Context()) })
	return a
}

func ports(s discovery.Snapshot) []int {
	var out []int
	for _, in := range s.Instances {
		out = append(out, in.Port)
	}
	slices.Sort(out)
	return out
}

// waitFor waits up to 20 s for a snapshot that satisfies ok.
func waitFor(t *testing.T, w discovery.Watcher, what string, ok func(discovery.Snapshot) bool) discovery.Snapshot {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last discovery.Snapshot
	for time.Now().Before(deadline) {
		s := next(t, w, 0)
		if ok(s) {
			return s
		}
		last = s
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: last snapshot %+v", what, last)
	return last
}

// TestRealConsulDNS follows a service through a real agent's DNS interface: instances arrive when
// they register, leave when their check turns critical (Consul's DNS answers only passing instances)
// and when they deregister, an unknown service is an empty list, and while the agent is down the
// last list is kept with its age.
func TestRealConsulDNS(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test against a real consul agent; skipped with -short")
	}
	agent := consultest.StartDev(t)
	cfg := api.DefaultConfig()
	cfg.Address = agent.HTTPAddr
	apiClient, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := consul.NewClient(apiClient)
	// Consul's TTL is 0: the floor is the refresh interval.
	r := newResolver(t, dns.WithServers(agent.DNSAddr), dns.WithRefresh(100*time.Millisecond, time.Second),
		dns.WithTimeout(300*time.Millisecond), dns.WithBackoff(100*time.Millisecond, 300*time.Millisecond))
	w := watch(t, r, "pricing.service.consul", dns.WithService("pricing"))

	waitFor(t, w, "the unknown service to be an empty list", func(s discovery.Snapshot) bool { return s.Version > 0 })
	if s := next(t, w, 0); s.Err != nil || len(s.Instances) != 0 {
		t.Fatalf("unknown service: %+v; want empty without error", s)
	}

	a, b := startApp(t, c, "pricing"), startApp(t, c, "pricing")
	want := []int{a.port, b.port}
	slices.Sort(want)
	s := waitFor(t, w, "both instances", func(s discovery.Snapshot) bool { return slices.Equal(ports(s), want) })
	if s.Err != nil || s.Instances[0].Address != "127.0.0.1" {
		t.Fatalf("%+v", s)
	}

	// /readyz says 503: the check turns critical and Consul's DNS stops answering with it.
	a.ready.Store(false)
	waitFor(t, w, "the critical instance to leave", func(s discovery.Snapshot) bool { return slices.Equal(ports(s), []int{b.port}) })
	a.ready.Store(true)
	waitFor(t, w, "the instance to come back", func(s discovery.Snapshot) bool { return len(s.Instances) == 2 })

	// Deregistration (the start of a Chassis drain) takes it out at once.
	start := time.Now()
	if err := a.reg.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, "the deregistered instance to leave", func(s discovery.Snapshot) bool { return slices.Equal(ports(s), []int{b.port}) })
	t.Logf("deregistration seen through DNS after %v (refresh floor 100ms)", time.Since(start).Round(time.Millisecond))

	// Resolver outage: the last list is kept, with Err set and Updated frozen.
	agent.Kill()
	down := waitFor(t, w, "the outage to be reported", func(s discovery.Snapshot) bool { return s.Err != nil })
	if !slices.Equal(ports(down), []int{b.port}) {
		t.Fatalf("outage dropped the list: %+v", down)
	}
	time.Sleep(time.Second)
	if s := next(t, w, 0); s.Err == nil || !s.Updated.Equal(down.Updated) || time.Since(s.Updated) < time.Second {
		t.Fatalf("during the outage: %+v; want Err and Updated frozen at %v", s, down.Updated)
	}
	t.Logf("outage: %v", down.Err)

	// The agent comes back empty (a dev agent); b's registrar registers it again.
	agent.Restart()
	agent.WaitReady(consultest.DevReadyTimeout)
	waitFor(t, w, "recovery", func(s discovery.Snapshot) bool { return s.Err == nil && slices.Equal(ports(s), []int{b.port}) })
}
