package semconv_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every name must be documented in docs/telemetry.md, so the doc and the code cannot drift apart.
func TestNamesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/telemetry.md")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{
		semconv.MetricClientAttempts, semconv.MetricRetryAttempts, semconv.MetricRetryBudgetTokens,
		semconv.MetricHedgesSent, semconv.MetricHedgesWon, semconv.MetricClientRejections,
		semconv.MetricBreakerState, semconv.MetricBreakerTransitions, semconv.MetricLBEjections,
		semconv.MetricLBEjected, semconv.MetricServerShed, semconv.MetricServerRateLimited,
		semconv.MetricServerConcurrencyLimit, semconv.MetricDiscoverySnapshotAge,
		semconv.MetricDiscoveryInstances, semconv.MetricDiscoveryErrors, semconv.MetricDiscoveryUpdates,
		semconv.EventRetry, semconv.EventHedge, semconv.EventHedgeWon, semconv.EventRejected, semconv.EventBreakerTransition,
		semconv.EventEjection, semconv.EventShed, semconv.EventRateLimited, semconv.EventFallback,
		semconv.AttrAttemptKind, semconv.AttrRetryReason, semconv.AttrRejectionReason,
		semconv.AttrBreakerInstance, semconv.AttrBreakerState, semconv.AttrBreakerFrom, semconv.AttrBreakerTo,
		semconv.AttrEjectionReason, semconv.AttrPriority,
		semconv.AttemptFirst, semconv.AttemptRetry, semconv.AttemptHedge, semconv.BreakerHalfOpen,
		semconv.BreakerInstanceService,
		semconv.ReasonBudgetExhausted, semconv.ReasonBreakerOpen, semconv.ReasonNoInstances,
	}
	// Names follow the OTel rules: lowercase, dot-separated namespaces, snake_case words.
	valid := regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)
	for _, n := range names {
		if !valid.MatchString(n) {
			t.Errorf("%q is not a valid OpenTelemetry name", n)
		}
		if !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("%q is not documented in docs/telemetry.md", n)
		}
	}
}
