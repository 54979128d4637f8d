package lb

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

// A pick that finds nothing counts as a local rejection (chassis.client.rejections, reason
// no_instances), on both paths: no instance at all, and none available.
func TestNoInstancesCountsAsRejection(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	empty := mustFixed(t, nil, WithMeterProvider(mp))
	for range 2 {
		if _, err := empty.Pick(context.Background()); !errors.Is(err, ErrNoInstances) {
			t.Fatalf("pick from an empty list: %v", err)
		}
	}
	down := mustFixed(t, instances(2), WithMeterProvider(mp),
		WithAvailability(func(string) bool { return false }))
	if _, err := down.Pick(context.Background()); !errors.Is(err, ErrNoInstances) {
		t.Fatalf("pick with no instance available: %v", err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == "chassis.lb.no_instances" {
				t.Errorf("old metric %s still emitted", m.Name)
			}
			if m.Name != semconv.MetricClientRejections {
				continue
			}
			if sm.Scope.Name != semconv.ScopeLB || m.Unit != semconv.UnitRequest {
				t.Errorf("%s: scope %q, unit %q", m.Name, sm.Scope.Name, m.Unit)
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				got = append(got, dp.Attributes.Encoded(attribute.DefaultEncoder()))
				if dp.Value != 3 {
					t.Errorf("%s = %d, want 3", m.Name, dp.Value)
				}
			}
		}
	}
	want := "chassis.rejection.reason=no_instances,peer.service=svc"
	if len(got) != 1 || got[0] != want {
		t.Fatalf("rejection series %q, want [%q]", got, want)
	}
}
