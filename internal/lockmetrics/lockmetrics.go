// Package lockmetrics records the instruments of a distributed lock, shared by the Consul lock
// (coordination/lock) and the etcd one (coordination/etcdsync) so both report the same names.
package lockmetrics

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/internal/obs"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Metrics records a lock's instruments. The names, units, attributes and their values are the
// scheme's (telemetry/semconv, docs/telemetry.md); every metric carries semconv.AttrLockKey.
type Metrics struct {
	key      attribute.KeyValue
	acquired metric.Int64Counter
	duration metric.Float64Histogram
	losses   metric.Int64Counter
	held     metric.Int64UpDownCounter
	errors   metric.Int64Counter
}

// New creates the instruments of the lock on key.
func New(mp metric.MeterProvider, key string) (Metrics, error) {
	in := obs.NewInstruments(mp, semconv.ScopeLock)
	lm := Metrics{key: attribute.String(semconv.AttrLockKey, key)}
	lm.acquired = in.Counter(semconv.MetricLockAcquisitions, semconv.UnitAcquisition,
		"Locks acquired.")
	lm.duration = in.Histogram(semconv.MetricLockAcquireDuration, semconv.UnitSeconds,
		"Time Acquire waited for the lock.")
	lm.losses = in.Counter(semconv.MetricLockLosses, semconv.UnitLoss,
		"Locks lost while held: session invalidated, renewal timed out, or key taken.")
	lm.held = in.UpDownCounter(semconv.MetricLockHeld, semconv.UnitLock,
		"1 while this process holds the lock.")
	lm.errors = in.Counter(semconv.MetricLockErrors, semconv.UnitError,
		"Failed calls to the coordination engine (Consul or etcd), by operation.")
	return lm, in.Err()
}

// Acquire records an acquisition after waiting wait.
func (m Metrics) Acquire(wait time.Duration) {
	ctx := context.Background()
	set := metric.WithAttributes(m.key)
	m.acquired.Add(ctx, 1, set)
	m.duration.Record(ctx, wait.Seconds(), set)
	m.held.Add(ctx, 1, set)
}

// End records the end of a tenure: released when reason is "", lost otherwise.
func (m Metrics) End(reason string) {
	ctx := context.Background()
	m.held.Add(ctx, -1, metric.WithAttributes(m.key))
	if reason != "" {
		m.losses.Add(ctx, 1, metric.WithAttributes(m.key, attribute.String(semconv.AttrLockReason, reason)))
	}
}

// Failed counts a failed call to the engine; op is a semconv.Operation* value.
func (m Metrics) Failed(op string) {
	m.errors.Add(context.Background(), 1, metric.WithAttributes(m.key, attribute.String(semconv.AttrLockOperation, op)))
}
