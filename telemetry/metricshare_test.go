package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/proto"

	"github.com/cloudchassis/kit/telemetry"
	"github.com/cloudchassis/kit/telemetry/semconv"
	"github.com/cloudchassis/kit/telemetry/telemetrytest"
)

// durationReceiver is an OTLP/HTTP metrics endpoint that keeps the last export's
// http.server.request.duration count and temporality.
type durationReceiver struct {
	mu          sync.Mutex
	count       uint64
	temporality metricspb.AggregationTemporality
	exports     int
}

func (d *durationReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	var req colmetrics.ExportMetricsServiceRequest
	if err := proto.Unmarshal(raw, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.exports++
	for _, rm := range req.ResourceMetrics {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if h := m.GetHistogram(); m.Name == semconv.HTTPServerRequestDuration && h != nil {
					d.temporality = h.AggregationTemporality
					for _, dp := range h.DataPoints {
						d.count += dp.Count
					}
				}
			}
		}
	}
	b, _ := proto.Marshal(&colmetrics.ExportMetricsServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(b)
}

// With Prometheus and OTLP both on (the default once an OTLP endpoint is set), OTLP exports the
// same cumulative aggregation Prometheus serves; with a delta preference it gets its own reader.
// Either way every request is counted once in what each exporter sends.
func TestOTLPMetricsShareThePrometheusAggregation(t *testing.T) {
	for _, tc := range []struct {
		temporality string
		want        metricspb.AggregationTemporality
		shared      bool
	}{
		{"cumulative", metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, true},
		{"delta", metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA, false},
	} {
		t.Run(tc.temporality, func(t *testing.T) {
			recv := &durationReceiver{}
			srv := httptest.NewServer(recv)
			defer srv.Close()
			tel, err := telemetry.New(context.Background(), telemetry.Settings{ServiceName: "svc", LogOutput: io.Discard,
				Lookup: telemetrytest.Env("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf",
					"OTEL_TRACES_EXPORTER", "none", "OTEL_METRIC_EXPORT_INTERVAL", "3600000",
					"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", tc.temporality)})
			if err != nil {
				t.Fatal(err)
			}
			if got := telemetry.SharesOTLPMetrics(tel); got != tc.shared {
				t.Errorf("OTLP export shares the Prometheus aggregation: %v, want %v", got, tc.shared)
			}
			mux := http.NewServeMux()
			mux.HandleFunc("GET /x", func(http.ResponseWriter, *http.Request) {})
			h := tel.Handler(mux)
			const n = 7
			for range n {
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil))
			}
			scrape := httptest.NewRecorder()
			tel.MetricsHandler().ServeHTTP(scrape, httptest.NewRequest("GET", "/metrics", nil))
			counted := false
			for _, line := range strings.Split(scrape.Body.String(), "\n") {
				if strings.HasPrefix(line, "http_server_request_duration_seconds_count{") && strings.HasSuffix(line, " 7") {
					counted = true
				}
			}
			if !counted {
				t.Fatalf("Prometheus does not count %d requests:\n%s", n, scrape.Body.String())
			}
			if err := tel.Shutdown(context.Background()); err != nil { // the last export
				t.Fatal(err)
			}
			recv.mu.Lock()
			defer recv.mu.Unlock()
			if recv.count != n || recv.temporality != tc.want {
				t.Errorf("OTLP got count %d (%s) in %d exports, want %d (%s)", recv.count, recv.temporality, recv.exports, n, tc.want)
			}
		})
	}
}
