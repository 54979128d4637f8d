package consul

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metric names. They follow the chassis.* namespace of the project's telemetry conventions; the
// attribute ServiceAttr carries the watched (or registered) service name, which is low-cardinality.
const (
	scopeName = "github.com/cloudchassis/kit/discovery/consul"

	MetricSnapshotAge   = "chassis.discovery.snapshot.age"
	MetricInstances     = "chassis.discovery.instances"
	MetricQueries       = "chassis.discovery.queries"
	MetricQueryErrors   = "chassis.discovery.query.errors"
	MetricRegistrations = "chassis.discovery.registrations"

	ServiceAttr = "chassis.discovery.service"
)

type registryMetrics struct {
	queries metric.Int64Counter
	errors  metric.Int64Counter
	age     metric.Float64ObservableGauge
	insts   metric.Int64ObservableGauge
}

func newRegistryMetrics(mp metric.MeterProvider) (registryMetrics, error) {
	m := mp.Meter(scopeName)
	var rm registryMetrics
	var err error
	if rm.queries, err = m.Int64Counter(MetricQueries, metric.WithUnit("{query}"),
		metric.WithDescription("Blocking queries sent to Consul by discovery watches.")); err != nil {
		return rm, err
	}
	if rm.errors, err = m.Int64Counter(MetricQueryErrors, metric.WithUnit("{query}"),
		metric.WithDescription("Discovery queries to Consul that failed.")); err != nil {
		return rm, err
	}
	if rm.age, err = m.Float64ObservableGauge(MetricSnapshotAge, metric.WithUnit("s"),
		metric.WithDescription("Age of the instance list served while Consul is unreachable; 0 while the watch is connected.")); err != nil {
		return rm, err
	}
	if rm.insts, err = m.Int64ObservableGauge(MetricInstances, metric.WithUnit("{instance}"),
		metric.WithDescription("Instances in the list a discovery watch currently serves.")); err != nil {
		return rm, err
	}
	return rm, nil
}

func serviceAttrs(service string) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(attribute.String(ServiceAttr, service)))
}
