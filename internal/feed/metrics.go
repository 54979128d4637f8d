package feed

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/internal/obs"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Metrics are the discovery metrics of a Pool's loops, as every registry client reports them
// (telemetry/semconv): the queries it sends, its failed queries, the snapshots it publishes, and the
// gauges of the lists it serves (instances, and their age while the registry fails), observed from
// the Pool. Every series carries semconv.AttrPeerService.
type Metrics struct {
	Queries metric.Int64Counter
	Errors  metric.Int64Counter
	Updates metric.Int64Counter
	cb      metric.Registration
}

// NewMetrics makes the instruments on mp's discovery meter; queries names the query counter (its
// description says what one query is). Unregister stops the gauges' callback.
func NewMetrics(mp metric.MeterProvider, pool *Pool, queries, queriesDesc string) (*Metrics, error) {
	in := obs.NewInstruments(mp, semconv.ScopeDiscovery)
	m := &Metrics{
		Queries: in.Counter(queries, semconv.UnitRequest, queriesDesc),
		Errors: in.Counter(semconv.MetricDiscoveryErrors, semconv.UnitError,
			"Discovery queries to the registry that failed."),
		Updates: in.Counter(semconv.MetricDiscoveryUpdates, semconv.UnitUpdate,
			"Instance-list snapshots published to watchers."),
	}
	age := in.FloatObservableGauge(semconv.MetricDiscoverySnapshotAge, semconv.UnitSeconds,
		"Age of the instance list served while the registry is unreachable; 0 while the watch is connected.")
	insts := in.ObservableGauge(semconv.MetricDiscoveryInstances, semconv.UnitInstance,
		"Instances in the list a discovery watch currently serves.")
	if err := in.Err(); err != nil {
		return nil, err
	}
	var err error
	m.cb, err = mp.Meter(semconv.ScopeDiscovery).RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for svc, g := range pool.Gauges(time.Now()) {
			attrs := ServiceAttrs(svc)
			o.ObserveFloat64(age, g.Age, attrs)
			o.ObserveInt64(insts, int64(g.Instances), attrs)
		}
		return nil
	}, age, insts)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Unregister stops observing the gauges. It only fails for a foreign meter, and there is nothing to
// do about it then.
func (m *Metrics) Unregister() { _ = m.cb.Unregister() }

// ServiceAttrs is the attribute set of a service's series.
func ServiceAttrs(service string) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(attribute.String(semconv.AttrPeerService, service)))
}

// ErrorAttrs is the attribute set of a service's failed query of type errorType.
func ErrorAttrs(service, errorType string) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(attribute.String(semconv.AttrPeerService, service),
		attribute.String(semconv.AttrErrorType, errorType)))
}
