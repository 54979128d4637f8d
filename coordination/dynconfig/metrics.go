package dynconfig

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/internal/obs"
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
	in := obs.NewInstruments(mp, semconv.ScopeDynconfig)
	dm := metrics{prefix: attribute.String(semconv.AttrConfigPrefix, prefix)}
	dm.reloads = in.Counter(semconv.MetricConfigReloads, semconv.UnitReload,
		"KV configuration contents evaluated, by outcome.")
	dm.invalid = in.Gauge(semconv.MetricConfigInvalid, semconv.UnitState,
		"1 while the newest KV configuration is rejected as invalid.")
	dm.errors = in.Counter(semconv.MetricConfigWatchErrors, semconv.UnitError,
		"Failed KV queries of the configuration watch.")
	return dm, in.Err()
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
