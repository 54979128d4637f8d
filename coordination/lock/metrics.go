package lock

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ScopeName is the instrumentation scope of this package's metrics.
const ScopeName = "github.com/cloudchassis/kit/coordination/lock"

// Metric names. Every metric carries AttrKey.
const (
	// MetricAcquisitions counts successful Acquire calls ({acquisition}).
	MetricAcquisitions = "chassis.lock.acquisitions"
	// MetricAcquireDuration is a histogram of the time Acquire waited before it got the lock (s).
	MetricAcquireDuration = "chassis.lock.acquire.duration"
	// MetricLosses counts locks lost while held ({loss}), with AttrReason.
	MetricLosses = "chassis.lock.losses"
	// MetricHeld is 1 while this process holds the lock ({lock}).
	MetricHeld = "chassis.lock.held"
	// MetricErrors counts failed calls to Consul ({error}), with AttrOperation: create_session,
	// renew_session, acquire, read, release, destroy_session.
	MetricErrors = "chassis.lock.errors"
)

// Attribute keys.
const (
	AttrKey       = "chassis.lock.key"
	AttrReason    = "chassis.lock.reason"
	AttrOperation = "chassis.lock.operation"
)

type metrics struct {
	key      attribute.KeyValue
	acquired metric.Int64Counter
	duration metric.Float64Histogram
	losses   metric.Int64Counter
	held     metric.Int64UpDownCounter
	errors   metric.Int64Counter
}

func newMetrics(mp metric.MeterProvider, key string) (metrics, error) {
	m := mp.Meter(ScopeName)
	lm := metrics{key: attribute.String(AttrKey, key)}
	var errs [5]error
	lm.acquired, errs[0] = m.Int64Counter(MetricAcquisitions, metric.WithUnit("{acquisition}"),
		metric.WithDescription("Locks acquired."))
	lm.duration, errs[1] = m.Float64Histogram(MetricAcquireDuration, metric.WithUnit("s"),
		metric.WithDescription("Time Acquire waited for the lock."))
	lm.losses, errs[2] = m.Int64Counter(MetricLosses, metric.WithUnit("{loss}"),
		metric.WithDescription("Locks lost while held: session invalidated, renewal timed out, or key taken."))
	lm.held, errs[3] = m.Int64UpDownCounter(MetricHeld, metric.WithUnit("{lock}"),
		metric.WithDescription("1 while this process holds the lock."))
	lm.errors, errs[4] = m.Int64Counter(MetricErrors, metric.WithUnit("{error}"),
		metric.WithDescription("Failed calls to Consul, retried with backoff."))
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
		m.losses.Add(ctx, 1, metric.WithAttributes(m.key, attribute.String(AttrReason, reason)))
	}
}

func (m metrics) failed(op string) {
	m.errors.Add(context.Background(), 1, metric.WithAttributes(m.key, attribute.String(AttrOperation, op)))
}
