package chassis_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/cloudchassis/kit/chassis"
)

// The metrics the Grafana dashboard (deploy/grafana/chassis.json) plots without waiting for an
// event (gauges and histograms, not counters of rare events) are on a real service's /metrics, under
// the names the dashboard queries, once it has served a request and made a client call. The semconv
// test checks the dashboard's names against the scheme; this one checks that the service emits them,
// through the real Prometheus exporter and its name conversion.
func TestDashboardMetricsAreEmitted(t *testing.T) {
	dash, err := os.ReadFile("../deploy/grafana/chassis.json")
	if err != nil {
		t.Fatal(err)
	}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer backend.Close()
	svc, err := chassis.New("gateway", chassis.WithEnv(env("DISCOVERY_STATIC_PRICING", strings.TrimPrefix(backend.URL, "http://"))))
	if err != nil {
		t.Fatal(err)
	}
	client := svc.Client("pricing")
	svc.HandleFunc("GET /price", func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://pricing/x", nil)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		io.Copy(w, resp.Body)
		resp.Body.Close()
	})
	start(t, svc)
	resp, err := http.Get("http://" + svc.Addr() + "/price")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /price: %d", resp.StatusCode)
	}

	resp, err = http.Get("http://" + svc.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	families := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			families[strings.Fields(name)[0]] = true
		}
	}
	for _, m := range []struct{ family, queried string }{
		{"http_server_request_duration_seconds", "http_server_request_duration_seconds_count"},
		{"http_client_request_duration_seconds", "http_client_request_duration_seconds_bucket"},
		{"chassis_breaker_state", "chassis_breaker_state"},
		{"chassis_lb_ejected", "chassis_lb_ejected"},
		{"chassis_discovery_instances", "chassis_discovery_instances"},
		{"chassis_discovery_snapshot_age_seconds", "chassis_discovery_snapshot_age_seconds"},
		{"process_memory_usage_bytes", "process_memory_usage_bytes"},
		{"chassis_client_retry_budget_tokens", "chassis_client_retry_budget_tokens"},
		{"chassis_server_concurrency_limit", "chassis_server_concurrency_limit"},
	} {
		if !strings.Contains(string(dash), m.queried) {
			t.Errorf("the dashboard no longer queries %s: update this list", m.queried)
		}
		if !families[m.family] {
			t.Errorf("%s is not on /metrics, but the dashboard plots it", m.family)
		}
	}
	if t.Failed() {
		t.Logf("families on /metrics: %v", families)
	}

	// The SLO panels plot recording rules (deploy/prometheus/slo-rules.yml) whose latency SLI reads the
	// bucket each latency threshold names (slo-objectives-rules.yml): that bucket must be one the server's
	// histogram has, spelled as its le label is, or the latency SLO records nothing.
	objectives, err := os.ReadFile("../deploy/prometheus/slo-objectives-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	thresholds := regexp.MustCompile(`"le", "([^"]+)"`).FindAllStringSubmatch(string(objectives), -1)
	if len(thresholds) == 0 {
		t.Fatal("slo-objectives-rules.yml names no latency threshold bucket")
	}
	for _, m := range thresholds {
		if !regexp.MustCompile(`(?m)^http_server_request_duration_seconds_bucket\{[^}]*le="` + regexp.QuoteMeta(m[1]) + `"`).Match(body) {
			t.Errorf("slo-objectives-rules.yml: latency threshold le=%q is not a bucket of http.server.request.duration on /metrics", m[1])
		}
	}
}
