package lb

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

var errRefused = errors.New("connection refused")

// fail reports n failed calls of the instance id.
func fail(t *testing.T, b *Balancer, id string, n int) {
	t.Helper()
	e := b.endpoints[id]
	for range n {
		e.inflight.Add(1)
		e.Done(time.Millisecond, errRefused)
	}
}

// succeed reports one successful call of id; it also lets the balancer notice that time passed.
func succeed(b *Balancer, id string) {
	e := b.endpoints[id]
	e.inflight.Add(1)
	e.Done(time.Millisecond, nil)
}

func ejectedIDs(b *Balancer) map[string]bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]bool{}
	for _, e := range b.order {
		if e.ejected {
			out[e.key] = true
		}
	}
	return out
}

func picked(t *testing.T, b *Balancer, n int) map[string]int {
	t.Helper()
	return pickN(t, b, context.Background(), n)
}

func TestConsecutiveFailuresEjectAndReadmit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		b := mustFixed(t, instances(4), WithPolicy(RoundRobin), WithMeterProvider(mp))

		fail(t, b, "i0", 4)
		succeed(b, "i0") // a success resets the run
		fail(t, b, "i0", 4)
		if ejectedIDs(b)["i0"] {
			t.Fatal("ejected after 4 consecutive failures")
		}
		fail(t, b, "i0", 1)
		if !ejectedIDs(b)["i0"] {
			t.Fatal("not ejected after 5 consecutive failures")
		}
		if c := picked(t, b, 300); c["i0"] != 0 {
			t.Fatalf("ejected instance picked: %v", c)
		}
		if got := counterSum(t, reader, semconv.MetricLBEjections, semconv.ReasonConsecutiveError); got != 1 {
			t.Fatalf("ejections metric %d", got)
		}
		if got := gaugeValue(t, reader, semconv.MetricLBEjected); got != 1 {
			t.Fatalf("ejected gauge %d", got)
		}

		time.Sleep(30*time.Second - time.Nanosecond)
		succeed(b, "i1")
		if !ejectedIDs(b)["i0"] {
			t.Fatal("re-admitted before the base ejection time")
		}
		time.Sleep(time.Nanosecond)
		succeed(b, "i1") // a completion after the deadline re-admits
		if ejectedIDs(b)["i0"] {
			t.Fatal("not re-admitted after the base ejection time")
		}
		if c := picked(t, b, 400); c["i0"] != 100 {
			t.Fatalf("re-admitted instance not picked evenly: %v", c)
		}

		// Ejected again at once: twice the base time.
		fail(t, b, "i0", 5)
		time.Sleep(60*time.Second - time.Nanosecond)
		succeed(b, "i1")
		if !ejectedIDs(b)["i0"] {
			t.Fatal("second ejection shorter than 2x base")
		}
		time.Sleep(time.Nanosecond)
		succeed(b, "i1")
		if ejectedIDs(b)["i0"] {
			t.Fatal("second ejection longer than 2x base")
		}

		// Healthy for 2 intervals forgives both past ejections: the next one is 1x base again.
		time.Sleep(20 * time.Second)
		fail(t, b, "i0", 5)
		time.Sleep(30 * time.Second)
		succeed(b, "i1")
		if ejectedIDs(b)["i0"] {
			t.Fatal("past ejections not forgiven after healthy intervals")
		}
	})
}

func TestEjectionTimeIsCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := DefaultOutlier()
		o.MaxEjectionTime = 45 * time.Second
		b := mustFixed(t, instances(4), WithOutlier(o))
		fail(t, b, "i0", 5)
		time.Sleep(30 * time.Second)
		succeed(b, "i1")
		fail(t, b, "i0", 5) // second ejection: 60s uncapped
		time.Sleep(45 * time.Second)
		succeed(b, "i1")
		if ejectedIDs(b)["i0"] {
			t.Fatal("ejection time not capped by MaxEjectionTime")
		}
	})
}

func TestFailureRateEjects(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader := sdkmetric.NewManualReader()
		o := DefaultOutlier()
		o.ConsecutiveFailures = 0
		o.MinRequests = 10
		o.FailurePercent = 50
		b := mustFixed(t, instances(4), WithOutlier(o),
			WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))

		// 9 calls, 5 failed: above 50% but below the minimum volume.
		for i := range 9 {
			if i%2 == 0 {
				fail(t, b, "i0", 1)
			} else {
				succeed(b, "i0")
			}
		}
		if ejectedIDs(b)["i0"] {
			t.Fatal("ejected below MinRequests")
		}
		// The window ends: its counts are forgotten.
		time.Sleep(10 * time.Second)
		for range 9 {
			succeed(b, "i0")
		}
		fail(t, b, "i0", 1) // 1 of 10 failed in this window
		if ejectedIDs(b)["i0"] {
			t.Fatal("ejected at 10% failures")
		}
		time.Sleep(10 * time.Second)
		for range 5 {
			succeed(b, "i0")
			fail(t, b, "i0", 1)
		}
		if !ejectedIDs(b)["i0"] {
			t.Fatal("not ejected at 50% of 10 calls")
		}
		if got := counterSum(t, reader, semconv.MetricLBEjections, semconv.ReasonSuccessRate); got != 1 {
			t.Fatalf("ejections metric %d", got)
		}
	})
}

func TestMaxEjectionPercent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := mustFixed(t, instances(4))
		for _, id := range []string{"i0", "i1", "i2"} {
			fail(t, b, id, 5)
		}
		if got := ejectedIDs(b); len(got) != 2 || got["i2"] {
			t.Fatalf("ejected %v, want i0 and i1 only (50%% of 4)", got)
		}
		// A single instance may be ejected (at least one is allowed), which leaves 0% healthy: panic.
		one := mustFixed(t, instances(1))
		fail(t, one, "i0", 5)
		if !ejectedIDs(one)["i0"] {
			t.Fatal("the only instance was not ejected")
		}
		if c := picked(t, one, 10); c["i0"] != 10 {
			t.Fatalf("panic mode did not keep the only instance in use: %v", c)
		}
	})
}

func TestPanicMode(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader := sdkmetric.NewManualReader()
		o := DefaultOutlier()
		o.MaxEjectionPercent = 100
		o.PanicPercent = 50
		b := mustFixed(t, instances(4), WithPolicy(RoundRobin), WithOutlier(o),
			WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))

		fail(t, b, "i0", 5)
		fail(t, b, "i1", 5) // 2 of 4 healthy: exactly 50%, not below
		if c := picked(t, b, 100); c["i0"]+c["i1"] != 0 || b.table.Load().Endpoints[0].key != "i2" {
			t.Fatalf("panic at 50%% healthy: %v", c)
		}
		if got := gaugeValue(t, reader, metricPanic); got != 0 {
			t.Fatalf("panic gauge %d", got)
		}
		fail(t, b, "i2", 5) // 1 of 4 healthy: panic, all four used again
		if c := picked(t, b, 400); len(c) != 4 || c["i0"] != 100 {
			t.Fatalf("panic mode does not spread over all: %v", c)
		}
		if got := gaugeValue(t, reader, metricPanic); got != 1 {
			t.Fatalf("panic gauge %d", got)
		}
		if got := counterSum(t, reader, metricPanics, ""); got != 1 {
			t.Fatalf("panics counter %d", got)
		}
		// Re-admission ends the panic.
		time.Sleep(30 * time.Second)
		succeed(b, "i3")
		if c := picked(t, b, 400); c["i0"] != 100 || len(ejectedIDs(b)) != 0 {
			t.Fatalf("after re-admission: %v, ejected %v", c, ejectedIDs(b))
		}
		if got := gaugeValue(t, reader, metricPanic); got != 0 {
			t.Fatalf("panic gauge after recovery %d", got)
		}

		// With panic mode disabled, ejecting all leaves nothing to pick.
		o.PanicPercent = 0
		strict := mustFixed(t, instances(2), WithOutlier(o))
		fail(t, strict, "i0", 5)
		fail(t, strict, "i1", 5)
		_, err := strict.Pick(context.Background())
		var nie *NoInstancesError
		if !errors.As(err, &nie) || nie.Reason != "all instances ejected" || nie.Instances != 2 {
			t.Fatalf("all ejected without panic: %v", err)
		}
	})
}

func TestOutlierDisabledAndLeavingInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		off := mustFixed(t, instances(2), WithOutlier(Outlier{}))
		fail(t, off, "i0", 100)
		if len(ejectedIDs(off)) != 0 {
			t.Fatal("ejected with ejection disabled")
		}
		// An ejected instance that leaves the snapshot frees its ejection slot.
		b := mustFixed(t, instances(5)) // at most 2 ejected
		fail(t, b, "i0", 5)
		fail(t, b, "i1", 5)
		fail(t, b, "i2", 4)
		b.update(instances(5)[1:]) // 4 left, 1 ejected: room for one more
		fail(t, b, "i2", 1)
		if got := ejectedIDs(b); !got["i1"] || !got["i2"] {
			t.Fatalf("ejected %v", got)
		}
	})
}

func TestClassification(t *testing.T) {
	cases := []struct {
		name    string
		status  int
		err     error
		failure bool
	}{
		{"ok", 200, nil, false},
		{"500", 500, nil, true},
		{"503", 503, nil, true},
		{"501", 501, nil, false},
		{"429", 429, nil, false},
		{"404", 404, nil, false},
		{"refused", 0, errRefused, true},
		{"timeout", 0, context.DeadlineExceeded, true},
		{"canceled", 0, context.Canceled, false},
		{"local rejection", 0, fmt.Errorf("attempt: %w", localErr{}), false},
	}
	for _, c := range cases {
		var resp *http.Response
		if c.err == nil {
			resp = &http.Response{StatusCode: c.status}
		}
		if got := discovery.Classify(resp, c.err); (got.Failure && !got.Local) != c.failure {
			t.Errorf("%s: failure = %+v, want %v", c.name, got, c.failure)
		}
	}
}

type localErr struct{}

func (localErr) Error() string          { return "breaker open" }
func (localErr) Class() discovery.Class { return discovery.Class{Local: true, Unsent: true} }

func counterSum(t *testing.T, r sdkmetric.Reader, name, reason string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				if v, _ := dp.Attributes.Value(attribute.Key(semconv.AttrEjectionReason)); reason == "" || v.AsString() == reason {
					sum += dp.Value
				}
			}
		}
	}
	return sum
}

func gaugeValue(t *testing.T, r sdkmetric.Reader, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				for _, dp := range m.Data.(metricdata.Gauge[int64]).DataPoints {
					return dp.Value
				}
			}
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
