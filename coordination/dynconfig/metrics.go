package dynconfig

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ScopeName is the instrumentation scope of this package's metrics.
const ScopeName = "github.com/cloudchassis/kit/coordination/dynconfig"

// Metric names. Every metric carries AttrPrefix.
const (
	// MetricReloads counts KV contents evaluated ({reload}), with AttrOutcome: applied (a variable
	// changed), unchanged (valid, no variable changed) or rejected (invalid; the old config stays).
	MetricReloads = "chassis.config.reloads"
	// MetricInvalid is 1 while the newest KV content is rejected, 0 otherwise ({state}): alert on it.
	MetricInvalid = "chassis.config.invalid"
	// MetricWatchErrors counts failed KV queries ({error}), each followed by a backoff.
	MetricWatchErrors = "chassis.config.watch.errors"
)

// Attribute keys and the values of AttrOutcome.
const (
	AttrPrefix  = "chassis.config.prefix"
	AttrOutcome = "chassis.config.outcome"

	OutcomeApplied   = "applied"
	OutcomeUnchanged = "unchanged"
	OutcomeRejected  = "rejected"
)

type metrics struct {
	prefix  attribute.KeyValue
	reloads metric.Int64Counter
	invalid metric.Int64Gauge
	errors  metric.Int64Counter
}

func newMetrics(mp metric.MeterProvider, prefix string) (metrics, error) {
	m := mp.Meter(ScopeName)
	dm := metrics{prefix: attribute.String(AttrPrefix, prefix)}
	var errs [3]error
	dm.reloads, errs[0] = m.Int64Counter(MetricReloads, metric.WithUnit("{reload}"),
		metric.WithDescription("KV configuration contents evaluated, by outcome."))
	dm.invalid, errs[1] = m.Int64Gauge(MetricInvalid, metric.WithUnit("{state}"),
		metric.WithDescription("1 while the newest KV configuration is rejected as invalid."))
	dm.errors, errs[2] = m.Int64Counter(MetricWatchErrors, metric.WithUnit("{error}"),
		metric.WithDescription("Failed KV queries of the configuration watch."))
	return dm, errors.Join(errs[:]...)
}

func (m metrics) reload(outcome string) {
	ctx := context.Background()
	m.reloads.Add(ctx, 1, metric.WithAttributes(m.prefix, attribute.String(AttrOutcome, outcome)))
	v := int64(0)
	if outcome == OutcomeRejected {
		v = 1
	}
	m.invalid.Record(ctx, v, metric.WithAttributes(m.prefix))
}

func (m metrics) watchError() { m.errors.Add(context.Background(), 1, metric.WithAttributes(m.prefix)) }
