package lock

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/internal/obs"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// metrics records a Lock's instruments. The names, units, attributes and their values are the
// scheme's (telemetry/semconv, docs/telemetry.md); every metric carries semconv.AttrLockKey.
type metrics struct {
	key      attribute.KeyValue
	acquired metric.Int64Counter
	duration metric.Float64Histogram
	losses   metric.Int64Counter
	held     metric.Int64UpDownCounter
	errors   metric.Int64Counter
}

func newMetrics(mp metric.MeterProvider, key string) (metrics, error) {
	in := obs.NewInstruments(mp, semconv.ScopeLock)
	lm := metrics{key: attribute.String(semconv.AttrLockKey, key)}
	lm.acquired = in.Counter(semconv.MetricLockAcquisitions, semconv.UnitAcquisition,
		"Locks acquired.")
	lm.duration = in.Histogram(semconv.MetricLockAcquireDuration, semconv.UnitSeconds,
		"Time Acquire waited for the lock.")
	lm.losses = in.Counter(semconv.MetricLockLosses, semconv.UnitLoss,
		"Locks lost while held: session invalidated, renewal timed out, or key taken.")
	lm.held = in.UpDownCounter(semconv.MetricLockHeld, semconv.UnitLock,
		"1 while this process holds the lock.")
	lm.errors = in.Counter(semconv.MetricLockErrors, semconv.UnitError,
		"Failed calls to Consul, by operation.")
	return lm, in.Err()
}

func (m metrics) acquire(wait time.Duration) {
	ctx := context.Background()
	set := metric.WithAttributes(m.key)
	m.acquired.Add(ctx, 1, set)
	m.duration.Record(ctx, wait.Seconds(), set)
	m.held.Add(ctx, 1, set)
}

func (m metrics) end(reason string) {
	ctx := context.Background()
	m.held.Add(ctx, -1, metric.WithAttributes(m.key))
	if reason != "" {
		m.losses.Add(ctx, 1, metric.WithAttributes(m.key, attribute.String(semconv.AttrLockReason, reason)))
	}
}

func (m metrics) failed(op string) {
	m.errors.Add(context.Background(), 1, metric.WithAttributes(m.key, attribute.String(semconv.AttrLockOperation, op)))
}
