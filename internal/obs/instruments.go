package obs

import (
	"errors"

	"go.opentelemetry.io/otel/metric"
)

// Instruments creates a component's instruments on one meter and collects their errors, so that a
// constructor creates them all and returns one error (Err) instead of dropping any.
type Instruments struct {
	m    metric.Meter
	errs []error
}

// NewInstruments returns an Instruments on mp's meter for scope.
func NewInstruments(mp metric.MeterProvider, scope string) *Instruments {
	return &Instruments{m: mp.Meter(scope)}
}

// Err returns the errors of every instrument and registration so far, joined; nil if none.
func (in *Instruments) Err() error { return errors.Join(in.errs...) }

func keep[T any](in *Instruments, v T, err error) T {
	if err != nil {
		in.errs = append(in.errs, err)
	}
	return v
}

// Counter creates an Int64Counter.
func (in *Instruments) Counter(name, unit, desc string) metric.Int64Counter {
	v, err := in.m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	return keep(in, v, err)
}

// UpDownCounter creates an Int64UpDownCounter.
func (in *Instruments) UpDownCounter(name, unit, desc string) metric.Int64UpDownCounter {
	v, err := in.m.Int64UpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	return keep(in, v, err)
}

// Histogram creates a Float64Histogram with the SDK's default buckets.
func (in *Instruments) Histogram(name, unit, desc string) metric.Float64Histogram {
	v, err := in.m.Float64Histogram(name, metric.WithUnit(unit), metric.WithDescription(desc))
	return keep(in, v, err)
}

// Gauge creates a synchronous Int64Gauge.
func (in *Instruments) Gauge(name, unit, desc string) metric.Int64Gauge {
	v, err := in.m.Int64Gauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
	return keep(in, v, err)
}

// ObservableGauge creates an Int64ObservableGauge, observed by a callback passed to Register.
func (in *Instruments) ObservableGauge(name, unit, desc string) metric.Int64ObservableGauge {
	v, err := in.m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
	return keep(in, v, err)
}

// FloatObservableGauge creates a Float64ObservableGauge, observed by a callback passed to Register.
func (in *Instruments) FloatObservableGauge(name, unit, desc string) metric.Float64ObservableGauge {
	v, err := in.m.Float64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
	return keep(in, v, err)
}

// Register registers f for the observable instruments, unless creating an instrument already
// failed (then it returns nil: there is nothing to unregister).
func (in *Instruments) Register(f metric.Callback, instruments ...metric.Observable) metric.Registration {
	if len(in.errs) > 0 {
		return nil
	}
	v, err := in.m.RegisterCallback(f, instruments...)
	return keep(in, v, err)
}
