package dns

import (
	"context"
	"errors"
	"net"
	"os"
)

// MetricQueries counts the DNS questions sent by watches ({request}), with semconv.AttrPeerService:
// the name discovery/consul counts its queries under, so one panel shows both backends. The shared
// discovery metrics of telemetry/semconv (MetricDiscoveryInstances, MetricDiscoverySnapshotAge,
// MetricDiscoveryErrors with semconv.AttrErrorType, MetricDiscoveryUpdates) are reported as the
// Consul registry reports them.
const MetricQueries = "chassis.discovery.queries"

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
