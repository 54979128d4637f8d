package lock

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

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
	m := mp.Meter(semconv.ScopeLock)
	lm := metrics{key: attribute.String(semconv.AttrLockKey, key)}
	var errs [5]error
	lm.acquired, errs[0] = m.Int64Counter(semconv.MetricLockAcquisitions, metric.WithUnit(semconv.UnitAcquisition),
		metric.WithDescription("Locks acquired."))
	lm.duration, errs[1] = m.Float64Histogram(semconv.MetricLockAcquireDuration, metric.WithUnit(semconv.UnitSeconds),
		metric.WithDescription("Time Acquire waited for the lock."))
	lm.losses, errs[2] = m.Int64Counter(semconv.MetricLockLosses, metric.WithUnit(semconv.UnitLoss),
		metric.WithDescription("Locks lost while held: session invalidated, renewal timed out, or key taken."))
	lm.held, errs[3] = m.Int64UpDownCounter(semconv.MetricLockHeld, metric.WithUnit(semconv.UnitLock),
		metric.WithDescription("1 while this process holds the lock."))
	lm.errors, errs[4] = m.Int64Counter(semconv.MetricLockErrors, metric.WithUnit(semconv.UnitError),
		metric.WithDescription("Failed calls to Consul, by operation."))
	return lm, errors.Join(errs[:]...)
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
