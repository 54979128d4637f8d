package consul_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/consul"
	"github.com/cloudchassis/kit/internal/consultest"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Tests against a real Consul agent (scripts/install-consul.sh installs it). They run in parallel with
// each other; each starts its own agents on free loopback ports.

func integration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against a real consul agent; skipped with -short")
	}
	t.Parallel()
}

func TestRealAgentRegisterWatchDeregister(t *testing.T) {
	integration(t)
	agent := consultest.StartDev(t)
	c := newClient(t, agent.HTTPAddr)
	checkURL, port, ready := readyApp(t)
	r := newRegistry(t, c)
	w := watch(t, r, "catalog", consul.WithTags("v1"))

	reg, err := consul.NewRegistrar(c, consul.Registration{
		Name: "catalog", Address: "127.0.0.1", Port: port, Tags: []string{"v1"}, Meta: map[string]string{"zone": "a"},
		CheckURL: checkURL, CheckInterval: 200 * time.Millisecond, CheckTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Deregister(context.Background()) })
	waitFor(t, w, "the empty service", func(s discovery.Snapshot) bool { return s.Err == nil && len(s.Instances) == 0 })

	if err := reg.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := waitFor(t, w, "the instance to arrive", func(s discovery.Snapshot) bool { return len(s.Instances) == 1 })
	if in := s.Instances[0]; in.ID != reg.ID() || in.Port != port || in.Meta["zone"] != "a" {
		t.Errorf("instance %+v", in)
	}
	meta := watch(t, r, "catalog", consul.WithFilter(consul.MetaFilter("zone", "b")))
	waitFor(t, meta, "the meta filter to exclude it", func(s discovery.Snapshot) bool { return s.Err == nil && len(s.Instances) == 0 })

	// The agent probes /readyz: a failing readiness takes the instance out.
	ready.Store(false)
	waitFor(t, w, "the failing check to remove it", func(s discovery.Snapshot) bool { return len(s.Instances) == 0 })
	ready.Store(true)
	waitFor(t, w, "the passing check to bring it back", func(s discovery.Snapshot) bool { return len(s.Instances) == 1 })

	if err := reg.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, "the instance to leave", func(s discovery.Snapshot) bool { return s.Err == nil && len(s.Instances) == 0 })
	if ok, err := c.Registered(t.Context(), reg.ID()); ok || err != nil {
		t.Errorf("agent still has the service after Deregister: %v %v", ok, err)
	}
}

func TestRealAgentRestartRegistersAgain(t *testing.T) {
	integration(t)
	agent := consultest.StartDev(t)
	c := newClient(t, agent.HTTPAddr)
	reg, err := consul.NewRegistrar(c, consul.Registration{Name: "cart", ID: "cart-1", Address: "127.0.0.1", Port: 9999, TTL: 3 * time.Second},
		consul.WithResyncInterval(500*time.Millisecond), consul.WithBackoff(100*time.Millisecond, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Deregister(context.Background()) })

	agent.Restart() // a dev agent keeps nothing: the service is gone
	agent.WaitReady(consultest.DevReadyTimeout)
	r := newRegistry(t, c)
	w := watch(t, r, "cart")
	waitFor(t, w, "the Registrar to register again and heartbeats to keep it passing", func(s discovery.Snapshot) bool {
		return len(s.Instances) == 1 && s.Instances[0].ID == "cart-1"
	})
	// It stays passing: the TTL heartbeats reach the new agent's check.
	time.Sleep(4 * time.Second)
	entries, _, err := c.Service(t.Context(), "cart", nil, true, &api.QueryOptions{})
	if err != nil || len(entries) != 1 {
		t.Fatalf("after a TTL period: %d passing, %v", len(entries), err)
	}
}

func TestRealAgentOutage(t *testing.T) {
	integration(t)
	const outage = 30 * time.Second
	agent := consultest.StartDev(t)
	proxy := consultest.NewProxy(t, agent.HTTPAddr)
	direct := newClient(t, agent.HTTPAddr)
	viaProxy := newClient(t, proxy.Addr())
	for _, id := range []string{"p1", "p2"} {
		if err := direct.Register(t.Context(), &api.AgentServiceRegistration{ID: id, Name: "pricing", Port: 8080, Address: "10.0.0." + id[1:]}); err != nil {
			t.Fatal(err)
		}
	}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	r := newRegistry(t, viaProxy, consul.WithMeterProvider(mp))
	w := watch(t, r, "pricing")
	s := waitFor(t, w, "two instances", func(s discovery.Snapshot) bool { return len(s.Instances) == 2 })

	proxy.Down()
	down := time.Now()
	s = waitFor(t, w, "the outage to be noticed", func(s discovery.Snapshot) bool { return s.Err != nil })
	if len(s.Instances) != 2 {
		t.Fatalf("the last known list was not kept: %+v", s)
	}
	// A change during the outage, seen after it.
	if err := direct.Deregister(t.Context(), "p1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(outage - time.Since(down))
	if age := gauge(t, reader, semconv.MetricDiscoverySnapshotAge); age < outage.Seconds()-2 {
		t.Errorf("%s = %.1f s after a %v outage", semconv.MetricDiscoverySnapshotAge, age, outage)
	}
	cur, _ := w.Next(t.Context(), 0)
	if len(cur.Instances) != 2 || cur.Err == nil || time.Since(cur.Updated) < outage-2*time.Second {
		t.Errorf("during the outage: %d instances, err %v, age %v", len(cur.Instances), cur.Err, time.Since(cur.Updated))
	}
	_, refused := proxy.Counts()
	// Backoff 250 ms doubling to 10 s, full jitter: about a dozen attempts in 30 s. A loop without
	// backoff would make thousands.
	if refused > 25 {
		t.Errorf("%d connection attempts to the dead agent in %v", refused, outage)
	} else {
		t.Logf("%d connection attempts to the dead agent in %v", refused, outage)
	}

	proxy.Up()
	up := time.Now()
	s = waitFor(t, w, "recovery", func(s discovery.Snapshot) bool { return s.Err == nil })
	t.Logf("recovered %v after the agent came back", time.Since(up).Round(time.Millisecond))
	if len(s.Instances) != 1 || s.Instances[0].ID != "p2" {
		t.Errorf("after recovery: %+v; want the change made during the outage", s.Instances)
	}
	if d := time.Since(up); d > consul.DefaultBackoffMax+2*time.Second {
		t.Errorf("recovery took %v", d)
	}
	if age := gauge(t, reader, semconv.MetricDiscoverySnapshotAge); age != 0 {
		t.Errorf("age %v after recovery", age)
	}
}

func TestRealClusterLeaderKilled(t *testing.T) {
	integration(t)
	cluster := consultest.StartCluster(t, 3)
	follower := cluster.Follower()
	c := newClient(t, follower.HTTPAddr)
	reg, err := consul.NewRegistrar(c, consul.Registration{Name: "gateway", ID: "gw-1", Address: "127.0.0.1", Port: 7000, TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Deregister(context.Background()) })
	r := newRegistry(t, c)
	w := watch(t, r, "gateway") // stale reads (the default), through a follower
	s := waitFor(t, w, "the instance", func(s discovery.Snapshot) bool { return len(s.Instances) == 1 })

	leader := cluster.Leader()
	leader.Kill()
	killed := time.Now()

	// Without a leader, stale reads still answer from the follower; consistent reads cannot.
	entries, _, err := c.Service(t.Context(), "gateway", nil, true, &api.QueryOptions{AllowStale: true})
	if err != nil || len(entries) != 1 {
		t.Errorf("stale read without a leader: %d entries, %v", len(entries), err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	_, _, cerr := c.Service(ctx, "gateway", nil, true, &api.QueryOptions{RequireConsistent: true})
	cancel()
	t.Logf("consistent read right after the leader died: %v", cerr)

	newLeader := cluster.WaitLeader(consultest.ClusterReadyTimeout)
	t.Logf("new leader %s elected %v after the kill", newLeader.Name, time.Since(killed).Round(time.Millisecond))
	cur, err := w.Next(t.Context(), 0)
	if err != nil || cur.Err != nil || len(cur.Instances) != 1 {
		t.Errorf("watch through the election: %+v, %v", cur, err)
	}
	// The watch keeps following changes under the new leader.
	if err := reg.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, w, "the deregistration under the new leader", func(s discovery.Snapshot) bool { return len(s.Instances) == 0 })
	if s.Err != nil {
		t.Errorf("final snapshot error: %v", s.Err)
	}
	if errors.Is(s.Err, discovery.ErrStale) {
		t.Error("list dropped as stale")
	}
}
