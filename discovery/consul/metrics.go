package consul

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/hashicorp/consul/api"
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
	// MetricRegistrationFailures is a gauge of the consecutive failed attempts to keep the
	// registration (TTL heartbeat, resync or re-registration; {error}): 0 while the agent answers,
	// growing while it does not, back to 0 at the next success or at Deregister. Alert on it staying
	// above 0 (deploy/prometheus/alert-rules.yml, ChassisRegistrationFailing).
	MetricRegistrationFailures = "chassis.discovery.registration.failures"
)

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
