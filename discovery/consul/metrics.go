package consul

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Metrics of this package beyond the shared discovery metrics of telemetry/semconv
// (MetricDiscoverySnapshotAge, MetricDiscoveryInstances, MetricDiscoveryErrors,
// MetricDiscoveryUpdates). All carry semconv.AttrPeerService, the watched or registered service name.
const (
	// MetricQueries counts queries sent to Consul by watches ({request}): with the error counter it
	// shows that a failing agent is not hammered.
	MetricQueries = "chassis.discovery.queries"
	// MetricRegistrations counts registrations sent to the agent ({request}), with attribute "reason":
	// "initial" or "restore" (the agent had lost the service).
	MetricRegistrations = "chassis.discovery.registrations"
)

type registryMetrics struct {
	queries metric.Int64Counter
	errors  metric.Int64Counter
	updates metric.Int64Counter
	age     metric.Float64ObservableGauge
	insts   metric.Int64ObservableGauge
}

func newRegistryMetrics(mp metric.MeterProvider) (registryMetrics, error) {
	m := mp.Meter(semconv.ScopeDiscovery)
	var rm registryMetrics
	var errs [5]error
	rm.queries, errs[0] = m.Int64Counter(MetricQueries, metric.WithUnit(semconv.UnitRequest),
		metric.WithDescription("Queries sent to Consul by discovery watches."))
	rm.errors, errs[1] = m.Int64Counter(semconv.MetricDiscoveryErrors, metric.WithUnit(semconv.UnitError),
		metric.WithDescription("Discovery queries to the registry that failed."))
	rm.updates, errs[2] = m.Int64Counter(semconv.MetricDiscoveryUpdates, metric.WithUnit(semconv.UnitUpdate),
		metric.WithDescription("Instance-list snapshots published to watchers."))
	rm.age, errs[3] = m.Float64ObservableGauge(semconv.MetricDiscoverySnapshotAge, metric.WithUnit(semconv.UnitSeconds),
		metric.WithDescription("Age of the instance list served while the registry is unreachable; 0 while the watch is connected."))
	rm.insts, errs[4] = m.Int64ObservableGauge(semconv.MetricDiscoveryInstances, metric.WithUnit(semconv.UnitInstance),
		metric.WithDescription("Instances in the list a discovery watch currently serves."))
	return rm, errors.Join(errs[:]...)
}

func serviceAttrs(service string) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(attribute.String(semconv.AttrPeerService, service)))
}

// errorType classifies a query error for semconv.AttrErrorType, with the values docs/telemetry.md lists.
func errorType(err error) string {
	var se api.StatusError
	var sep *api.StatusError
	var nerr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &se) && se.Code >= 500, errors.As(err, &sep) && sep.Code >= 500:
		return "status_5xx"
	case errors.As(err, &nerr) && nerr.Timeout():
		return "timeout"
	case errors.As(err, &nerr), isConnError(err):
		return "connection"
	}
	return "_OTHER"
}

// isConnError recognizes connection failures the consul client reports without a net.Error in the
// chain (it formats some with %v).
func isConnError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) {
		return true
	}
	s := err.Error()
	for _, frag := range []string{"connection refused", "connection reset", "EOF", "broken pipe", "no such host"} {
		if strings.Contains(s, frag) {
			return true
		}
	}
	return false
}
