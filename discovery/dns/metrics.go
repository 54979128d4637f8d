package dns

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/internal/obs"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// MetricQueries counts the DNS questions sent by watches ({request}), with semconv.AttrPeerService:
// the name discovery/consul counts its queries under, so one panel shows both backends. The shared
// discovery metrics of telemetry/semconv (MetricDiscoveryInstances, MetricDiscoverySnapshotAge,
// MetricDiscoveryErrors with semconv.AttrErrorType, MetricDiscoveryUpdates) are reported as the
// Consul registry reports them.
const MetricQueries = "chassis.discovery.queries"

type metrics struct {
	queries metric.Int64Counter
	errors  metric.Int64Counter
	updates metric.Int64Counter
	age     metric.Float64ObservableGauge
	insts   metric.Int64ObservableGauge
}

func newMetrics(mp metric.MeterProvider) (metrics, error) {
	in := obs.NewInstruments(mp, semconv.ScopeDiscovery)
	var m metrics
	m.queries = in.Counter(MetricQueries, semconv.UnitRequest, "DNS questions sent by discovery watches.")
	m.errors = in.Counter(semconv.MetricDiscoveryErrors, semconv.UnitError,
		"Discovery queries to the registry that failed.")
	m.updates = in.Counter(semconv.MetricDiscoveryUpdates, semconv.UnitUpdate,
		"Instance-list snapshots published to watchers.")
	m.age = in.FloatObservableGauge(semconv.MetricDiscoverySnapshotAge, semconv.UnitSeconds,
		"Age of the instance list served while the registry is unreachable; 0 while the watch is connected.")
	m.insts = in.ObservableGauge(semconv.MetricDiscoveryInstances, semconv.UnitInstance,
		"Instances in the list a discovery watch currently serves.")
	return m, in.Err()
}

func serviceAttrs(service string) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(attribute.String(semconv.AttrPeerService, service)))
}

func errorAttrs(service string, err error) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(attribute.String(semconv.AttrPeerService, service),
		attribute.String(semconv.AttrErrorType, errorType(err))))
}

// errorType classifies a refresh error for semconv.AttrErrorType, with the values docs/telemetry.md
// lists: a server that answered SERVFAIL or REFUSED is "status_5xx", the registry's failure.
func errorType(err error) string {
	var nerr net.Error
	switch {
	case errors.Is(err, ErrServer):
		return "status_5xx"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &nerr) && nerr.Timeout():
		return "timeout"
	case errors.As(err, &nerr):
		return "connection"
	}
	return "_OTHER"
}

// observe reports the gauges of every watch, per service: the largest age and instance count when
// several names feed one service.
func (r *Resolver) observe(_ context.Context, o metric.Observer) error {
	type agg struct {
		age   float64
		insts int
	}
	now := time.Now()
	per := map[string]agg{}
	r.mu.Lock()
	for _, w := range r.watches {
		w.mu.Lock()
		a := per[w.service]
		if w.feed.Cur.Err != nil && !w.feed.Cur.Updated.IsZero() {
			a.age = max(a.age, now.Sub(w.feed.Cur.Updated).Seconds())
		}
		a.insts = max(a.insts, len(w.feed.Cur.Instances))
		per[w.service] = a
		w.mu.Unlock()
	}
	r.mu.Unlock()
	for svc, a := range per {
		attrs := serviceAttrs(svc)
		o.ObserveFloat64(r.metrics.age, a.age, attrs)
		o.ObserveInt64(r.metrics.insts, int64(a.insts), attrs)
	}
	return nil
}
