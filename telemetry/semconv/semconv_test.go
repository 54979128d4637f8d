package semconv_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every metric, attribute and value name must be documented in docs/telemetry.md, so the doc and
// the code cannot drift apart. Span events and the reasons they carry are held to more:
// TestEveryDocumentedEventIsProvoked.
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
		semconv.SpanAttempt, // span events: TestEveryDocumentedEventIsProvoked
		semconv.AttrAttemptKind, semconv.AttrRetryReason, semconv.AttrRejectionReason,
		semconv.AttrBreakerInstance, semconv.AttrBreakerState, semconv.AttrBreakerFrom, semconv.AttrBreakerTo,
		semconv.AttrEjectionReason, semconv.AttrPriority,
		semconv.AttemptFirst, semconv.AttemptRetry, semconv.AttemptHedge, semconv.BreakerHalfOpen,
		semconv.BreakerInstanceService,
		semconv.ReasonBudgetExhausted, semconv.ReasonBreakerOpen, semconv.ReasonNoInstances,
		// Coordination.
		semconv.MetricLockAcquisitions, semconv.MetricLockAcquireDuration, semconv.MetricLockLosses,
		semconv.MetricLockHeld, semconv.MetricLockErrors,
		semconv.MetricConfigReloads, semconv.MetricConfigInvalid, semconv.MetricConfigWatchErrors,
		semconv.AttrLockKey, semconv.AttrLockReason, semconv.AttrLockOperation,
		semconv.AttrConfigPrefix, semconv.AttrConfigOutcome,
		semconv.ReasonSessionInvalidated, semconv.ReasonRenewTimeout, semconv.ReasonKeyLost,
		semconv.OperationCreateSession, semconv.OperationRenewSession, semconv.OperationAcquire,
		semconv.OperationRead, semconv.OperationRelease, semconv.OperationDestroySession,
		semconv.OutcomeApplied, semconv.OutcomeUnchanged, semconv.OutcomeRejected,
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

// The Grafana dashboard (deploy/grafana/chassis.json) may query only metrics and labels of the scheme,
// as the Prometheus exporter names them, so that renaming a metric cannot leave a dead panel.
func TestDashboardUsesSchemeNames(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/grafana/chassis.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if s, ok := e.(string); ok && k == "expr" {
					exprs = append(exprs, s)
				}
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(doc)
	if len(exprs) < 10 {
		t.Fatalf("found %d queries in the dashboard, want its panels' queries", len(exprs))
	}

	prom := func(name string) string { return strings.ReplaceAll(name, ".", "_") }
	metrics := map[string]bool{}
	for _, m := range []string{
		semconv.HTTPServerRequestDuration, semconv.HTTPServerActiveRequests, semconv.HTTPClientRequestDuration,
		semconv.MetricClientAttempts, semconv.MetricRetryAttempts, semconv.MetricRetryBudgetTokens,
		semconv.MetricHedgesSent, semconv.MetricHedgesWon, semconv.MetricClientRejections,
		semconv.MetricBreakerState, semconv.MetricBreakerTransitions, semconv.MetricLBEjections,
		semconv.MetricLBEjected, semconv.MetricServerShed, semconv.MetricServerRateLimited,
		semconv.MetricServerConcurrencyLimit, semconv.MetricDiscoverySnapshotAge,
		semconv.MetricDiscoveryInstances, semconv.MetricDiscoveryErrors, semconv.MetricDiscoveryUpdates,
	} {
		for _, suffix := range []string{"", "_total", "_seconds", "_seconds_bucket", "_seconds_count", "_seconds_sum"} {
			metrics[prom(m)+suffix] = true
		}
	}
	// The recording rules of deploy/prometheus (the SLO series): a name the dashboard queries must be
	// recorded by one of them.
	rules, err := filepath.Glob("../../deploy/prometheus/*.yml")
	if err != nil || len(rules) == 0 {
		t.Fatalf("no rule files in deploy/prometheus: %v", err)
	}
	record := regexp.MustCompile(`(?m)^\s*- record: (\S+)\s*$`)
	for _, f := range rules {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range record.FindAllStringSubmatch(string(raw), -1) {
			metrics[m[1]] = true
		}
	}
	// Not ours: Prometheus' own and the OTel runtime/process instrumentation.
	metrics["up"] = true
	metrics["process_memory_usage_bytes"] = true
	labels := map[string]bool{
		// Resource attributes and Prometheus' own labels.
		"service": true, "instance_id": true, "job": true, "instance": true, "le": true,
	}
	for _, a := range []string{
		semconv.AttrHTTPRoute, semconv.AttrHTTPRequestMethod, semconv.AttrHTTPResponseStatusCode, semconv.AttrServerAddress,
		semconv.AttrPeerService, semconv.AttrAttemptKind, semconv.AttrRetryReason, semconv.AttrRejectionReason,
		semconv.AttrBreakerInstance, semconv.AttrBreakerState, semconv.AttrBreakerFrom, semconv.AttrBreakerTo,
		semconv.AttrEjectionReason, semconv.AttrPriority, semconv.AttrErrorType,
	} {
		labels[prom(a)] = true
	}
	funcs := map[string]bool{"sum": true, "rate": true, "increase": true, "histogram_quantile": true, "max": true,
		"min": true, "count": true, "clamp_min": true, "vector": true, "by": true, "or": true, "and": true, "avg": true,
		"on": true, "group_left": true}

	ident := regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	strs := regexp.MustCompile(`"[^"]*"|\[[^\]]*\]`)
	byList := regexp.MustCompile(`\b(?:by|on|group_left) \(([^)]*)\)`)
	selector := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	number := regexp.MustCompile(`\b[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?`)
	for _, e := range exprs {
		for _, m := range byList.FindAllStringSubmatch(e, -1) {
			for _, l := range strings.Split(m[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !labels[l] {
					t.Errorf("dashboard groups by %q, not a label of the scheme: %s", l, e)
				}
			}
		}
		for _, m := range selector.FindAllStringSubmatch(e, -1) {
			if !labels[m[1]] {
				t.Errorf("dashboard selects on %q, not a label of the scheme: %s", m[1], e)
			}
		}
		// What remains outside strings, ranges, by-lists and selectors are functions and metrics.
		rest := byList.ReplaceAllString(strs.ReplaceAllString(e, ""), "")
		rest = number.ReplaceAllString(selector.ReplaceAllString(rest, ""), "")
		for _, id := range ident.FindAllString(rest, -1) {
			if !funcs[id] && !metrics[id] {
				t.Errorf("dashboard queries %q, not a metric of the scheme: %s", id, e)
			}
		}
	}
}
