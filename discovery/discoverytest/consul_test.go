package discoverytest_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/discovery/discoverytest"
)

func startServer(t *testing.T) (*discoverytest.Server, *api.Client) {
	t.Helper()
	s := discoverytest.NewServer()
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c, err := api.NewClient(&api.Config{Address: s.Addr(), Transport: &http.Transport{}})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

// waitBlocked waits until n blocking queries wait on the server: a change made next must wake them.
func waitBlocked(t *testing.T, s *discoverytest.Server, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.WaitBlocked(ctx, n); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond for up to 5 s; the fake's checks run on real timers.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConsulHTTPCheckProbes(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	var probes atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probes.Add(1)
		if !healthy.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
		}
	}))
	defer app.Close()
	s, c := startServer(t)

	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "web-1", Name: "web", Port: 8080, Address: "10.0.0.1", Tags: []string{"v1"}, Meta: map[string]string{"zone": "a"},
		Check: &api.AgentServiceCheck{HTTP: app.URL + "/readyz", Interval: "50ms", Timeout: "1s", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
	entries, meta, err := c.Health().Service("web", "", true, nil)
	if err != nil || len(entries) != 1 || entries[0].Service.Address != "10.0.0.1" || meta.LastIndex < 2 {
		t.Fatalf("health = %v, %+v, %v", entries, meta, err)
	}

	// A blocking query returns when the probe turns the check critical.
	healthy.Store(false)
	start := time.Now()
	entries, meta2, err := c.Health().Service("web", "", true, &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 10 * time.Second})
	if err != nil || len(entries) != 0 || meta2.LastIndex <= meta.LastIndex {
		t.Fatalf("after the app failed: %v, %+v, %v", entries, meta2, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("blocking query took %v to see the change", d)
	}
	if probes.Load() == 0 {
		t.Error("the check URL was never probed")
	}
	if st := s.Services()["web-1"]; st.Status != api.HealthCritical {
		t.Errorf("status %q", st.Status)
	}
	healthy.Store(true)
	eventually(t, "recovery", func() bool { return s.Services()["web-1"].Status == api.HealthPassing })

	// Filters and tags.
	for _, tc := range []struct {
		tag, filter string
		want        int
	}{
		{"v1", "", 1}, {"v2", "", 0},
		{"", "Service.Meta.zone == `a`", 1}, {"", `Service.Meta["zone"] != "a"`, 0},
		{"", `"v1" in Service.Tags and (Service.ID == "web-1")`, 1},
	} {
		entries, _, err := c.Health().Service("web", tc.tag, true, &api.QueryOptions{Filter: tc.filter})
		if err != nil || len(entries) != tc.want {
			t.Errorf("tag %q filter %q: %d entries, %v; want %d", tc.tag, tc.filter, len(entries), err, tc.want)
		}
	}
	if _, _, err := c.Health().Service("web", "", true, &api.QueryOptions{Filter: "Service.Port > 1"}); err == nil {
		t.Error("unsupported filter accepted")
	}

	if err := c.Agent().ServiceDeregister("web-1"); err != nil {
		t.Fatal(err)
	}
	var se api.StatusError
	if err := c.Agent().ServiceDeregister("web-1"); !errors.As(err, &se) || se.Code != 404 {
		t.Errorf("deregister unknown: %v", err)
	}
	if _, _, err := c.Agent().Service("web-1", nil); !errors.As(err, &se) || se.Code != 404 {
		t.Errorf("agent service unknown: %v", err)
	}
}

func TestConsulTTLAndDeregisterCritical(t *testing.T) {
	s, c := startServer(t)
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "w", Name: "worker", Port: 1,
		Check: &api.AgentServiceCheck{CheckID: "ttl-w", TTL: "200ms", DeregisterCriticalServiceAfter: "300ms"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Services()["w"].Status; st != api.HealthCritical {
		t.Errorf("initial status %q, want critical (Consul's default)", st)
	}
	if err := c.Agent().UpdateTTL("ttl-w", "ok", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	if st := s.Services()["w"].Status; st != api.HealthPassing {
		t.Errorf("after pass: %q", st)
	}
	if err := c.Agent().UpdateTTL("nope", "", api.HealthPassing); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown check: %v", err)
	}
	eventually(t, "TTL expiry", func() bool { return s.Services()["w"].Status == api.HealthCritical })
	eventually(t, "deregistration of the critical service", func() bool { _, ok := s.Services()["w"]; return !ok })
}

func TestConsulFaults(t *testing.T) {
	s, c := startServer(t)
	s.SetFailure(http.StatusInternalServerError)
	if _, _, err := c.Health().Service("x", "", true, nil); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("injected 500: %v", err)
	}
	s.SetFailure(0)

	s.SetLatency(100 * time.Millisecond)
	start := time.Now()
	if _, err := c.Status().Leader(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("latency not applied: %v", d)
	}
	s.SetLatency(0)

	// A service without checks is passing, as in Consul; unsupported check kinds are refused.
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "a", Port: 1}); err != nil {
		t.Fatal(err)
	}
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "b", Port: 1,
		Check: &api.AgentServiceCheck{TCP: "127.0.0.1:1", Interval: "1s"}}); err == nil {
		t.Error("TCP check accepted by a fake that only runs HTTP and TTL checks")
	}
	entries, meta, err := c.Health().Service("a", "", true, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("service without checks: %v, %v", entries, err)
	}
	done := make(chan uint64)
	go func() {
		_, m, _ := c.Health().Service("a", "", false, &api.QueryOptions{WaitIndex: meta.LastIndex + 100, WaitTime: 10 * time.Second})
		if m == nil {
			done <- 0
			return
		}
		done <- m.LastIndex
	}()
	waitBlocked(t, s, 1)
	s.ResetIndex()
	select {
	case idx := <-done:
		if idx != 1 {
			t.Errorf("index after reset = %d, want 1", idx)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ResetIndex did not release the blocked query")
	}

	// Outage: connection refused, then back on the same address.
	if err := s.Pause(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status().Leader(); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("paused server: %v", err)
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status().Leader(); err != nil {
		t.Errorf("resumed server: %v", err)
	}
	if n := s.Requests(discoverytest.RouteStatus); n != 2 {
		t.Errorf("status requests counted %d, want 2 (the refused one never arrived)", n)
	}
}

func TestConsulKVAndSessions(t *testing.T) {
	s, c := startServer(t)
	kv := c.KV()
	ok, _, err := kv.CAS(&api.KVPair{Key: "cfg/a", Value: []byte("1"), ModifyIndex: 0}, nil)
	if err != nil || !ok {
		t.Fatalf("CAS create: %v %v", ok, err)
	}
	p, meta, err := kv.Get("cfg/a", nil)
	if err != nil || p == nil || string(p.Value) != "1" {
		t.Fatalf("get: %+v %v", p, err)
	}
	if ok, _, _ := kv.CAS(&api.KVPair{Key: "cfg/a", Value: []byte("x"), ModifyIndex: p.ModifyIndex + 1}, nil); ok {
		t.Error("CAS with a wrong index succeeded")
	}
	done := make(chan string)
	go func() {
		p, _, _ := kv.Get("cfg/a", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 10 * time.Second})
		if p == nil {
			done <- ""
			return
		}
		done <- string(p.Value)
	}()
	waitBlocked(t, s, 1)
	if ok, _, err := kv.CAS(&api.KVPair{Key: "cfg/a", Value: []byte("2"), ModifyIndex: p.ModifyIndex}, nil); !ok || err != nil {
		t.Fatalf("CAS update: %v %v", ok, err)
	}
	if got := <-done; got != "2" {
		t.Errorf("blocking get saw %q", got)
	}
	if _, err := kv.Put(&api.KVPair{Key: "cfg/b", Value: []byte("3")}, nil); err != nil {
		t.Fatal(err)
	}
	pairs, _, err := kv.List("cfg/", nil)
	if err != nil || len(pairs) != 2 {
		t.Fatalf("list: %v %v", pairs, err)
	}
	keys, _, err := kv.Keys("cfg/", "", nil)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys: %v %v", keys, err)
	}

	// Locks with sessions.
	s1, _, err := c.Session().Create(&api.SessionEntry{Name: "leader", TTL: "10s", Behavior: api.SessionBehaviorRelease}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, _, err := c.Session().Create(&api.SessionEntry{Name: "other"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := kv.Acquire(&api.KVPair{Key: "lock", Value: []byte("me"), Session: s1}, nil); !ok || err != nil {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	if ok, _, _ := kv.Acquire(&api.KVPair{Key: "lock", Session: s2}, nil); ok {
		t.Error("second session acquired a held lock")
	}
	if _, _, err := c.Session().Renew(s1, nil); err != nil {
		t.Errorf("renew: %v", err)
	}
	if _, err := c.Session().Destroy(s1, nil); err != nil {
		t.Fatal(err)
	}
	p, _, _ = kv.Get("lock", nil)
	if p == nil || p.Session != "" {
		t.Fatalf("lock after its session was destroyed: %+v", p)
	}
	if ok, _, _ := kv.Acquire(&api.KVPair{Key: "lock", Session: s2}, nil); !ok {
		t.Error("lock not acquirable after release")
	}
	if p, _, _ := kv.Get("lock", nil); p.LockIndex != 2 {
		t.Errorf("LockIndex %d, want 2", p.LockIndex)
	}
	if _, err := kv.DeleteTree("cfg/", nil); err != nil {
		t.Fatal(err)
	}
	if p, _, _ := kv.Get("cfg/a", nil); p != nil {
		t.Error("key survived DeleteTree")
	}
}

func TestWaitBlockedCountsWaitingQueries(t *testing.T) {
	s, c := startServer(t)
	if n := s.Blocked(); n != 0 {
		t.Fatalf("%d blocked before any query", n)
	}
	_, meta, err := c.Health().Service("web", "", true, nil) // not blocking: index 0
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Blocked(); n != 0 {
		t.Fatalf("a non-blocking query counted as blocked: %d", n)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	if err := s.WaitBlocked(ctx, 1); err == nil {
		t.Fatal("WaitBlocked returned with no query waiting")
	}
	cancel()
	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, _, err := c.Health().Service("web", "", true, &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 10 * time.Second})
			done <- err
		}()
	}
	waitBlocked(t, s, 2)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{Name: "web", Port: 1}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Blocked(); n != 0 {
		t.Errorf("%d still counted as blocked after they returned", n)
	}
}
