package dynconfig

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

// metrics records a Config's instruments. The names, units, attributes and their values are the
// scheme's (telemetry/semconv, docs/telemetry.md); every metric carries semconv.AttrConfigPrefix.
type metrics struct {
	prefix  attribute.KeyValue
	reloads metric.Int64Counter
	invalid metric.Int64Gauge
	errors  metric.Int64Counter
}

func newMetrics(mp metric.MeterProvider, prefix string) (metrics, error) {
	m := mp.Meter(semconv.ScopeDynconfig)
	dm := metrics{prefix: attribute.String(semconv.AttrConfigPrefix, prefix)}
	var errs [3]error
	dm.reloads, errs[0] = m.Int64Counter(semconv.MetricConfigReloads, metric.WithUnit(semconv.UnitReload),
		metric.WithDescription("KV configuration contents evaluated, by outcome."))
	dm.invalid, errs[1] = m.Int64Gauge(semconv.MetricConfigInvalid, metric.WithUnit(semconv.UnitState),
		metric.WithDescription("1 while the newest KV configuration is rejected as invalid."))
	dm.errors, errs[2] = m.Int64Counter(semconv.MetricConfigWatchErrors, metric.WithUnit(semconv.UnitError),
		metric.WithDescription("Failed KV queries of the configuration watch."))
	return dm, errors.Join(errs[:]...)
}

func (m metrics) reload(outcome string) {
	ctx := context.Background()
	m.reloads.Add(ctx, 1, metric.WithAttributes(m.prefix, attribute.String(semconv.AttrConfigOutcome, outcome)))
	v := int64(0)
	if outcome == semconv.OutcomeRejected {
		v = 1
	}
	m.invalid.Record(ctx, v, metric.WithAttributes(m.prefix))
}

func (m metrics) watchError() { m.errors.Add(context.Background(), 1, metric.WithAttributes(m.prefix)) }
