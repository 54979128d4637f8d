package etcd

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudchassis/kit/internal/obs"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Metrics of this package beyond the shared discovery metrics of telemetry/semconv
// (MetricDiscoverySnapshotAge, MetricDiscoveryInstances, MetricDiscoveryErrors,
// MetricDiscoveryUpdates). They have the names and meaning of discovery/consul's, so that one
// dashboard and one set of alerts serve both engines. All carry semconv.AttrPeerService.
const (
	// MetricQueries counts lists (Get) sent to etcd by watches ({request}): one per (re)start of a
	// watch, so a growing rate means watches keep failing.
	MetricQueries = "chassis.discovery.queries"
	// MetricRegistrations counts registrations written ({request}), with attribute "reason":
	// "initial" or "restore" (the lease was lost and the instance registered again under a new one).
	MetricRegistrations = "chassis.discovery.registrations"
	// MetricRegistrationFailures is a gauge of consecutive failed attempts to register again after
	// the lease was lost ({error}); 0 while registered.
	MetricRegistrationFailures = "chassis.discovery.registration.failures"
)

type registryMetrics struct {
	queries metric.Int64Counter
	errors  metric.Int64Counter
	updates metric.Int64Counter
	age     metric.Float64ObservableGauge
	insts   metric.Int64ObservableGauge
}

func newRegistryMetrics(in *obs.Instruments) registryMetrics {
	var rm registryMetrics
	rm.queries = in.Counter(MetricQueries, semconv.UnitRequest, "Lists sent to etcd by discovery watches.")
	rm.errors = in.Counter(semconv.MetricDiscoveryErrors, semconv.UnitError,
		"Discovery lists and watches on the registry that failed.")
	rm.updates = in.Counter(semconv.MetricDiscoveryUpdates, semconv.UnitUpdate,
		"Instance-list snapshots published to watchers.")
	rm.age = in.FloatObservableGauge(semconv.MetricDiscoverySnapshotAge, semconv.UnitSeconds,
		"Age of the instance list served while the registry is unreachable; 0 while the watch is connected.")
	rm.insts = in.ObservableGauge(semconv.MetricDiscoveryInstances, semconv.UnitInstance,
		"Instances in the list a discovery watch currently serves.")
	return rm
}

func serviceAttrs(service string) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(attribute.String(semconv.AttrPeerService, service)))
}

// errorType classifies an etcd error for semconv.AttrErrorType, with the values docs/telemetry.md
// lists, plus "no_leader" (the member is cut off from the quorum) and "compacted".
func errorType(err error) string {
	switch {
	case errors.Is(err, rpctypes.ErrNoLeader):
		return "no_leader"
	case errors.Is(err, rpctypes.ErrCompacted):
		return "compacted"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, errSilent):
		return "timeout"
	}
	switch status.Code(err) {
	case codes.Unavailable:
		return "connection"
	case codes.DeadlineExceeded:
		return "timeout"
	}
	return "_OTHER"
}
