package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/etcd"
	"github.com/cloudchassis/kit/internal/etcdtest"
	"github.com/cloudchassis/kit/telemetry/semconv"
	"github.com/cloudchassis/kit/telemetry/telemetrytest"
)

// Tests against real etcd members (scripts/install-etcd.sh installs the binary); each test starts
// its own on free loopback ports.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func integration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test against a real etcd; skipped with -short")
	}
	t.Parallel()
}

// fast are options that make failures show within about a second.
var fast = []etcd.Option{etcd.WithProgressInterval(300 * time.Millisecond), etcd.WithBackoff(50*time.Millisecond, 300*time.Millisecond),
	etcd.WithRequestTimeout(time.Second)}

func newClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second,
		DialKeepAliveTime: time.Second, DialKeepAliveTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newRegistry(t *testing.T, c *clientv3.Client, opts ...etcd.Option) *etcd.Registry {
	t.Helper()
	r, err := etcd.NewRegistry(c, append(fast[:len(fast):len(fast)], opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func watch(t *testing.T, r *etcd.Registry, service string) *etcd.Watcher {
	t.Helper()
	w, err := r.Watch(service)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

func register(t *testing.T, c *clientv3.Client, reg etcd.Registration, opts ...etcd.Option) *etcd.Registrar {
	t.Helper()
	if reg.Address == "" {
		reg.Address = "127.0.0.1"
	}
	r, err := etcd.NewRegistrar(c, reg, append(fast[:len(fast):len(fast)], opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Deregister(context.Background()) })
	return r
}

// waitFor returns the first snapshot of w that satisfies ok, failing the test after 20 s.
func waitFor(t *testing.T, w discovery.Watcher, what string, ok func(discovery.Snapshot) bool) discovery.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var last discovery.Snapshot
	for {
		s, err := w.Next(ctx, last.Version)
		if err != nil {
			t.Fatalf("waiting for %s: %v; last snapshot %+v", what, err, last)
		}
		if ok(s) {
			return s
		}
		last = s
	}
}

func ids(s discovery.Snapshot) string {
	out := ""
	for _, i := range s.Instances {
		out += i.ID + " "
	}
	return out
}

func has(id string) func(discovery.Snapshot) bool {
	return func(s discovery.Snapshot) bool {
		for _, i := range s.Instances {
			if i.ID == id {
				return s.Err == nil
			}
		}
		return false
	}
}

func gone(id string) func(discovery.Snapshot) bool {
	return func(s discovery.Snapshot) bool { return s.Err == nil && !has(id)(s) }
}

func TestRegisterWatchDeregister(t *testing.T) {
	integration(t)
	m := etcdtest.Start(t)
	c := newClient(t, m.Endpoint())
	r := newRegistry(t, c)
	w1, w2 := watch(t, r, "catalog"), watch(t, r, "catalog")
	other := watch(t, r, "catalog-v2") // a longer name must not see catalog's keys
	waitFor(t, w1, "the empty service", func(s discovery.Snapshot) bool { return s.Err == nil && len(s.Instances) == 0 && s.Version > 0 })

	reg := register(t, c, etcd.Registration{Name: "catalog", Port: 8080, Tags: []string{"v1"},
		Meta: map[string]string{"grpc_port": "9000"}, Weight: 3})
	s := waitFor(t, w1, "the instance", has(reg.ID()))
	want := discovery.Instance{ID: reg.ID(), Address: "127.0.0.1", Port: 8080, Tags: []string{"v1"}, Meta: map[string]string{"grpc_port": "9000"}, Weight: 3}
	if len(s.Instances) != 1 || !s.Instances[0].Equal(want) {
		t.Fatalf("instances %+v, want %+v", s.Instances, want)
	}
	if time.Since(s.Updated) > 5*time.Second {
		t.Errorf("Updated %v is old", s.Updated)
	}
	s2 := waitFor(t, w2, "the instance on the second watcher", has(reg.ID()))
	if s2.Version != s.Version {
		t.Errorf("two watchers of one watch see versions %d and %d", s2.Version, s.Version)
	}
	if s, _ := other.Next(t.Context(), 0); len(s.Instances) != 0 {
		t.Errorf("catalog-v2 sees %s", ids(s))
	}

	// A second instance, then deregistration of the first: the set follows.
	reg2 := register(t, c, etcd.Registration{Name: "catalog", Port: 8081})
	waitFor(t, w1, "two instances", func(s discovery.Snapshot) bool { return len(s.Instances) == 2 })
	start := time.Now()
	if err := reg.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w1, "the deregistered instance to go", gone(reg.ID()))
	t.Logf("deregister -> watcher update: %v", time.Since(start))
	// The last one leaves: the empty list is published, not held.
	if err := reg2.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w1, "the empty list", func(s discovery.Snapshot) bool { return s.Err == nil && len(s.Instances) == 0 })
	// Register after Deregister registers again.
	if err := reg.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w1, "the instance back", has(reg.ID()))

	// A key that is not an instance is left out, not fatal.
	if _, err := c.Put(t.Context(), etcd.InstanceKey(etcd.DefaultPrefix, "catalog", "junk"), "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(t.Context(), etcd.InstanceKey(etcd.DefaultPrefix, "catalog", "bare"), `{"address":"10.0.0.1","port":1}`); err != nil {
		t.Fatal(err)
	}
	s = waitFor(t, w1, "the bare instance named by its key", has("bare"))
	if len(s.Instances) != 2 {
		t.Errorf("instances %s, want the registered one and bare", ids(s))
	}

	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w1.Next(t.Context(), 0); !errors.Is(err, discovery.ErrClosed) {
		t.Errorf("Next after Close: %v", err)
	}
	waitFor(t, w2, "the shared watch to live on after one handle closed", has(reg.ID()))
}

// A process that dies without deregistering (here: its client closes without revoking, as after a
// SIGKILL) disappears when its lease expires.
func TestLeaseExpiresWhenTheProcessDies(t *testing.T) {
	integration(t)
	m := etcdtest.Start(t)
	r := newRegistry(t, newClient(t, m.Endpoint()))
	w := watch(t, r, "payments")
	dying := newClient(t, m.Endpoint())
	const ttl = 2 * time.Second
	reg := register(t, dying, etcd.Registration{Name: "payments", Port: 8080, TTL: ttl})
	waitFor(t, w, "the instance", has(reg.ID()))
	time.Sleep(ttl) // the keep-alive renews it past its first TTL
	waitFor(t, w, "the instance, still", has(reg.ID()))

	died := time.Now()
	if err := dying.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, "the dead instance to go", gone(reg.ID()))
	took := time.Since(died)
	t.Logf("gone %v after the process died (TTL %v)", took, ttl)
	// etcd checks expiry every 500 ms and the last renewal may be up to TTL/3 old.
	if took > ttl+time.Second {
		t.Errorf("gone after %v, want within TTL %v (+1s)", took, ttl)
	}
}

// etcd down: the watcher keeps the last known list with Err and a growing age; etcd back after more
// than the TTL: the lease is lost, the Registrar registers again and the watcher confirms it.
func TestEtcdRestart(t *testing.T) {
	integration(t)
	m := etcdtest.Start(t)
	c := newClient(t, m.Endpoint())
	rec := telemetrytest.NewRecorder()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rec.Reader))
	r := newRegistry(t, c, etcd.WithMeterProvider(mp))
	w := watch(t, r, "stock")
	const ttl = 2 * time.Second
	reg := register(t, c, etcd.Registration{Name: "stock", Port: 8080, TTL: ttl}, etcd.WithMeterProvider(mp))
	ok := waitFor(t, w, "the instance", has(reg.ID()))
	svc := attribute.String(semconv.AttrPeerService, "stock")
	if n := rec.CounterValue(t, semconv.MetricDiscoveryInstances, svc); n != 1 {
		t.Errorf("%s = %v, want 1", semconv.MetricDiscoveryInstances, n)
	}

	m.Kill()
	down := waitFor(t, w, "the failure to show", func(s discovery.Snapshot) bool { return s.Err != nil })
	if !has(reg.ID())(discovery.Snapshot{Instances: down.Instances}) {
		t.Fatalf("the last known list was dropped: %s (%v)", ids(down), down.Err)
	}
	if down.Updated.Before(ok.Updated) || time.Since(down.Updated) > 3*time.Second {
		t.Errorf("Updated %v: want the last confirmation (after %v)", down.Updated, ok.Updated)
	}
	t.Logf("failure shown after the kill: %v; error: %v", time.Since(down.Updated), down.Err)
	time.Sleep(2 * ttl) // longer than the lease: clientv3 gives it up
	if age := rec.CounterValue(t, semconv.MetricDiscoverySnapshotAge, svc); age < 2*ttl.Seconds() {
		t.Errorf("%s = %vs during the outage, want the list's age (> %v)", semconv.MetricDiscoverySnapshotAge, age, 2*ttl)
	}
	if n := rec.CounterValue(t, semconv.MetricDiscoveryErrors, svc); n < 1 {
		t.Errorf("%s = %v during the outage", semconv.MetricDiscoveryErrors, n)
	}
	m.Restart()
	m.WaitReady(etcdtest.ReadyTimeout)
	back := waitFor(t, w, "the registration back, confirmed", has(reg.ID()))
	if back.Err != nil || time.Since(back.Updated) > 5*time.Second {
		t.Errorf("after the restart: %+v", back)
	}
	// etcd kept the old lease across its restart (and extended it), so the key may be back before
	// the Registrar, whose keep-alive channel closed meanwhile, has written it under a new lease.
	restore := attribute.String("reason", "restore")
	for deadline := time.Now().Add(5 * time.Second); rec.CounterValue(t, etcd.MetricRegistrations, svc, restore) < 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s{reason=restore} = 0 5s after the restart: the lost lease was not replaced", etcd.MetricRegistrations)
		}
	}
	if age := rec.CounterValue(t, semconv.MetricDiscoverySnapshotAge, svc); age != 0 {
		t.Errorf("%s = %v after the recovery", semconv.MetricDiscoverySnapshotAge, age)
	}
	// The registration is alive, not a leftover: it outlives another TTL.
	time.Sleep(ttl + time.Second)
	if s, _ := w.Next(t.Context(), 0); !has(reg.ID())(s) {
		t.Errorf("the registration did not survive a TTL after the restart: %s (%v)", ids(s), s.Err)
	}
}

// staleKV answers the first list with a revision older than the compaction, as a watch that was
// disconnected while etcd compacted past its revision would resume.
type staleKV struct {
	clientv3.KV
	rev   int64
	calls atomic.Int32
}

func (k *staleKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := k.KV.Get(ctx, key, opts...)
	if k.calls.Add(1) == 1 && err == nil {
		resp.Header.Revision = k.rev
	}
	return resp, err
}

func TestCompactedRevisionListsAgain(t *testing.T) {
	integration(t)
	m := etcdtest.Start(t)
	c := newClient(t, m.Endpoint())
	var first int64
	for i := range 5 {
		resp, err := c.Put(t.Context(), etcd.InstanceKey(etcd.DefaultPrefix, "ledger", fmt.Sprint("i", i)),
			fmt.Sprintf(`{"address":"127.0.0.1","port":%d}`, 8000+i))
		if err != nil {
			t.Fatal(err)
		}
		if first == 0 {
			first = resp.Header.Revision
		}
	}
	resp, err := c.Delete(t.Context(), etcd.InstanceKey(etcd.DefaultPrefix, "ledger", "i0"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(t.Context(), resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	r := newRegistry(t, c)
	kv := &staleKV{rev: first}
	etcd.WrapKV(r, func(inner clientv3.KV) clientv3.KV { kv.KV = inner; return kv })
	w := watch(t, r, "ledger")
	s := waitFor(t, w, "the fresh list", func(s discovery.Snapshot) bool { return s.Err == nil && len(s.Instances) == 4 })
	if has("i0")(s) {
		t.Errorf("the deleted instance is listed: %s", ids(s))
	}
	for deadline := time.Now().Add(10 * time.Second); kv.calls.Load() < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the compacted watch did not list again")
		}
	}
	// Compaction is not an outage: no snapshot with an error, and the list still follows changes.
	if s, _ := w.Next(t.Context(), 0); s.Err != nil || s.Version != 1 {
		t.Errorf("after the compaction: version %d, err %v", s.Version, s.Err)
	}
	if _, err := c.Delete(t.Context(), etcd.InstanceKey(etcd.DefaultPrefix, "ledger", "i1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, "the watch after the fresh list to follow a delete", func(s discovery.Snapshot) bool { return len(s.Instances) == 3 })
}

func TestRegistrationIsValidated(t *testing.T) {
	c := &clientv3.Client{}
	for _, reg := range []etcd.Registration{
		{Port: 1, Address: "a"},
		{Name: "a/b", Port: 1, Address: "a"},
		{Name: "a", Port: 0, Address: "a"},
		{Name: "a", Port: 1},
		{Name: "a", Port: 1, Address: "a", TTL: time.Second},
	} {
		if _, err := etcd.NewRegistrar(c, reg); err == nil {
			t.Errorf("%+v accepted", reg)
		}
	}
	if _, err := etcd.NewRegistrar(c, etcd.Registration{Name: "a", Port: 1, Address: "a"}); err != nil {
		t.Error(err)
	}
}

func TestSettings(t *testing.T) {
	var c etcd.Settings
	if err := c.Check(); err == nil {
		t.Error("no endpoints accepted")
	}
	c = etcd.Settings{Endpoints: []string{"https://10.0.0.1:2379", "10.0.0.2:2379"}, User: "root:pw", Consistency: "serializable"}
	cc, err := c.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cc.TLS == nil || cc.Username != "root" || cc.Password != "pw" || cc.Endpoints[0] != "10.0.0.1:2379" || cc.DialTimeout != etcd.DefaultDialTimeout {
		t.Errorf("%+v", cc)
	}
	for _, bad := range []etcd.Settings{
		{Endpoints: []string{"10.0.0.1"}},
		{Endpoints: []string{"a:1"}, LeaseTTL: time.Second},
		{Endpoints: []string{"a:1"}, Consistency: "quorum"},
		{Endpoints: []string{"a:1"}, Cert: "x"},
		{Endpoints: []string{"a:1"}, CACert: os.DevNull},
	} {
		if _, err := bad.ClientConfig(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
