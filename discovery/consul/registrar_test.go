package consul_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/cloudchassis/kit/discovery/consul"
)

func newRegistrar(t *testing.T, a consul.Agent, reg consul.Registration, opts ...consul.Option) *consul.Registrar {
	t.Helper()
	r, err := consul.NewRegistrar(a, reg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Deregister(context.Background()) })
	return r
}

func TestRegistrationValidation(t *testing.T) {
	_, err := consul.NewRegistrar(newFakeAgent(), consul.Registration{Port: 70000, CheckURL: "ftp://x", TTL: time.Second,
		DeregisterCriticalAfter: time.Second, Weight: -1})
	if err == nil {
		t.Fatal("want error")
	}
	for _, frag := range []string{"Name is empty", "Port 70000", "both CheckURL and TTL", "DeregisterCriticalAfter", "Weight -1"} {
		if !strings.Contains(err.Error(), frag) {
			t.Errorf("error %q does not mention %q", err, frag)
		}
	}
	_, err = consul.NewRegistrar(newFakeAgent(), consul.Registration{Name: "a", Port: 1})
	if err == nil || !strings.Contains(err.Error(), "neither CheckURL nor TTL") {
		t.Errorf("no check: %v", err)
	}
	_, err = consul.NewRegistrar(newFakeAgent(), consul.Registration{Name: "a", Port: 1, CheckURL: "localhost:9090/readyz"})
	if err == nil || !strings.Contains(err.Error(), "not an http(s) URL") {
		t.Errorf("bad URL: %v", err)
	}
}

func TestRegisterHTTPCheckAndDeregister(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := newFakeAgent()
		r := newRegistrar(t, a, consul.Registration{
			Name: "catalog", Address: "127.0.0.1", Port: 8080, Tags: []string{"v1"}, Meta: map[string]string{"zone": "a"},
			CheckURL: "http://127.0.0.1:9090/readyz", Weight: 3,
		})
		if svcs, _, _ := a.snapshot(); len(svcs) != 0 {
			t.Fatal("NewRegistrar registered before Register")
		}
		if err := r.Register(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := r.Register(t.Context()); err != nil { // idempotent
			t.Fatal(err)
		}
		svcs, regs, _ := a.snapshot()
		got := svcs[r.ID()]
		if got == nil || regs != 1 {
			t.Fatalf("registered %d times, services %v", regs, svcs)
		}
		if !strings.HasPrefix(r.ID(), "catalog-127.0.0.1-8080-") || len(r.ID()) != len("catalog-127.0.0.1-8080-")+8 {
			t.Errorf("generated ID %q", r.ID())
		}
		c := got.Check
		if got.Name != "catalog" || got.Port != 8080 || got.Meta["zone"] != "a" || got.Weights == nil || got.Weights.Passing != 3 {
			t.Errorf("registration %+v", got)
		}
		if c.HTTP != "http://127.0.0.1:9090/readyz" || c.Status != api.HealthPassing || c.Interval != "5s" ||
			c.Timeout != "2s" || c.DeregisterCriticalServiceAfter != "1m0s" || c.TTL != "" {
			t.Errorf("check %+v", c)
		}
		if err := r.Deregister(t.Context()); err != nil {
			t.Fatal(err)
		}
		if svcs, _, _ := a.snapshot(); len(svcs) != 0 {
			t.Errorf("still registered after Deregister: %v", svcs)
		}
		if err := r.Deregister(t.Context()); err != nil {
			t.Errorf("second Deregister: %v", err)
		}
		// Register after Deregister registers again, under the same ID.
		if err := r.Register(t.Context()); err != nil {
			t.Fatal(err)
		}
		if svcs, _, _ := a.snapshot(); svcs[r.ID()] == nil {
			t.Error("Register after Deregister did not register")
		}
	})
}

func TestRegistrarRestoresLostService(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := newFakeAgent()
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		r := newRegistrar(t, a, consul.Registration{Name: "svc", ID: "svc-1", Port: 1, CheckURL: "http://h:2/readyz"},
			consul.WithMeterProvider(mp))
		if err := r.Register(t.Context()); err != nil {
			t.Fatal(err)
		}
		a.forget() // a dev agent restarted
		time.Sleep(consul.DefaultResyncInterval + time.Millisecond)
		synctest.Wait()
		svcs, regs, _ := a.snapshot()
		if svcs["svc-1"] == nil || regs != 2 {
			t.Fatalf("after the agent forgot the service: services %v, %d registrations; want it back", svcs, regs)
		}
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(t.Context(), &rm); err != nil {
			t.Fatal(err)
		}
		reasons := map[string]int64{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == consul.MetricRegistrations {
					for _, dp := range sum.DataPoints {
						v, _ := dp.Attributes.Value("reason")
						reasons[v.AsString()] += dp.Value
					}
				}
			}
		}
		if reasons["initial"] != 1 || reasons["restore"] != 1 {
			t.Errorf("%s by reason = %v, want initial 1, restore 1", consul.MetricRegistrations, reasons)
		}
	})
}

func TestRegistrarTTLHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := newFakeAgent()
		r := newRegistrar(t, a, consul.Registration{Name: "svc", ID: "svc-1", Port: 1, TTL: 3 * time.Second},
			consul.WithResyncInterval(time.Hour))
		if err := r.Register(t.Context()); err != nil {
			t.Fatal(err)
		}
		svcs, _, _ := a.snapshot()
		if c := svcs["svc-1"].Check; c.TTL != "3s" || c.HTTP != "" || c.CheckID != "service:svc-1" {
			t.Fatalf("check %+v", c)
		}
		time.Sleep(10*time.Second + time.Millisecond)
		synctest.Wait()
		if _, _, ttls := a.snapshot(); ttls != 10 {
			t.Errorf("%d heartbeats in 10 s with a 3 s TTL; want one per second", ttls)
		}

		// The agent lost the check: the next heartbeat gets a 404 and registers again, long before the
		// hourly resync.
		a.forget()
		time.Sleep(time.Second)
		synctest.Wait()
		if svcs, regs, _ := a.snapshot(); svcs["svc-1"] == nil || regs != 2 {
			t.Fatalf("after a heartbeat 404: services %v, registrations %d", svcs, regs)
		}

		if err := r.Deregister(t.Context()); err != nil {
			t.Fatal(err)
		}
		_, _, ttls := a.snapshot()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if _, _, after := a.snapshot(); after != ttls {
			t.Errorf("heartbeats continued after Deregister: %d -> %d", ttls, after)
		}
	})
}

func TestRegistrarAgentDownBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := newFakeAgent()
		a.err = errDown
		reader := sdkmetric.NewManualReader()
		r := newRegistrar(t, a, consul.Registration{Name: "svc", ID: "svc-1", Port: 1, TTL: 3 * time.Second},
			consul.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
		if err := r.Register(t.Context()); !errors.Is(err, errDown) {
			t.Fatalf("Register with the agent down: %v", err)
		}
		a.mu.Lock()
		a.err = nil
		a.mu.Unlock()
		if err := r.Register(t.Context()); err != nil {
			t.Fatal(err)
		}
		a.mu.Lock()
		a.err = errDown
		a.mu.Unlock()
		if n, ok := failuresGauge(t, reader); !ok || n != 0 {
			t.Errorf("%s after Register = %d (reported %v), want 0", consul.MetricRegistrationFailures, n, ok)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		// A minute of failed heartbeats, with backoff: the gauge counts them, for the
		// ChassisRegistrationFailing alert.
		if n, _ := failuresGauge(t, reader); n < 3 {
			t.Errorf("%s after a minute with the agent down = %d, want the consecutive failures (3 or more)", consul.MetricRegistrationFailures, n)
		}
		a.mu.Lock()
		a.err = nil
		a.forget2()
		a.mu.Unlock()
		time.Sleep(consul.DefaultResyncInterval + time.Second)
		synctest.Wait()
		if svcs, _, _ := a.snapshot(); svcs["svc-1"] == nil {
			t.Fatal("registration not restored after the agent came back empty")
		}
		if n, _ := failuresGauge(t, reader); n != 0 {
			t.Errorf("%s after the agent came back = %d, want 0", consul.MetricRegistrationFailures, n)
		}
		if err := r.Deregister(t.Context()); err != nil {
			t.Fatal(err)
		}
	})
}

// failuresGauge reads consul.MetricRegistrationFailures for service svc.
func failuresGauge(t *testing.T, reader *sdkmetric.ManualReader) (int64, bool) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == consul.MetricRegistrationFailures {
				for _, dp := range g.DataPoints {
					if v, _ := dp.Attributes.Value("peer.service"); v.AsString() == "svc" {
						return dp.Value, true
					}
				}
			}
		}
	}
	return 0, false
}
