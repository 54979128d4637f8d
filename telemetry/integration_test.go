package telemetry_test

// Integration tests against a real Prometheus and a real OpenTelemetry Collector. They run with
// `go test ./...` (skipped only with -short) and need the binaries installed first:
//
//	scripts/install-prometheus.sh   # Debian package prometheus
//	scripts/install-otelcol.sh      # builds otelcol-chassis into $(go env GOPATH)/bin
//
// A missing binary fails the test with the command to run: it is not a reason to skip.

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	collogs "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/cloudchassis/kit/internal/syncbuf"
	"github.com/cloudchassis/kit/internal/toolpath"
	"github.com/cloudchassis/kit/telemetry"
	"github.com/cloudchassis/kit/telemetry/telemetrytest"
)

// findBinary looks on PATH, then in $(go env GOPATH)/bin, where the install scripts put binaries.
func findBinary(t *testing.T, name, script string) string {
	t.Helper()
	p := toolpath.Find(name)
	if p == "" {
		t.Fatalf("%s not found on PATH or in $(go env GOPATH)/bin: run %s before go test", name, script)
	}
	return p
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockedBuffer collects a child process's output for failure messages and assertions.
type lockedBuffer struct{ syncbuf.Buffer }

func (l *lockedBuffer) tail() string {
	s := l.String()
	if len(s) > 4000 {
		s = "..." + s[len(s)-4000:]
	}
	return s
}

// startProcess runs bin with args and kills it at cleanup.
func startProcess(t *testing.T, bin string, args ...string) *lockedBuffer {
	t.Helper()
	out := &lockedBuffer{}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return out
}

// eventually polls cond every 100ms until it holds or the deadline passes: a bounded wait on an
// external process, not a timing assumption.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool, diag func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %v\n%s", what, within, diag())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestPrometheusScrapesRequestDuration(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Prometheus server; skipped with -short")
	}
	bin := findBinary(t, "prometheus", "scripts/install-prometheus.sh")

	rec := telemetrytest.NewRecorder()
	tel, err := telemetry.New(context.Background(), telemetry.Settings{ServiceName: "catalog", LogOutput: io.Discard,
		Lookup: telemetrytest.Env("OTEL_TRACES_SAMPLER", "always_on")}, telemetry.WithSpanProcessor(rec.Spans))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	public := httptest.NewServer(tel.Handler(newMux(tel)))
	t.Cleanup(public.Close)
	adminMux := http.NewServeMux()
	adminMux.Handle("GET /metrics", tel.MetricsHandler())
	admin := httptest.NewServer(adminMux)
	t.Cleanup(admin.Close)
	const calls = 3
	for i := range calls {
		resp, err := http.Get(fmt.Sprintf("%s/items/%d", public.URL, i))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	traceIDs := map[string]bool{}
	for _, s := range rec.Ended("GET /items/{id}") {
		traceIDs[s.SpanContext().TraceID().String()] = true
	}

	dir := t.TempDir()
	promPort := freePort(t)
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: catalog
    static_configs:
      - targets: ["%s"]
`, strings.TrimPrefix(admin.URL, "http://"))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	promURL := fmt.Sprintf("http://127.0.0.1:%d", promPort)
	out := startProcess(t, bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+fmt.Sprintf("127.0.0.1:%d", promPort),
		"--enable-feature=exemplar-storage",
	)

	query := `http_server_request_duration_seconds_count{http_route="/items/{id}",http_request_method="GET",http_response_status_code="200"}`
	var value string
	eventually(t, 60*time.Second, "Prometheus returning the route's request count", func() bool {
		var res struct {
			Data struct {
				Result []struct {
					Value []any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if getJSON(promURL+"/api/v1/query?query="+url.QueryEscape(query), &res) != nil || len(res.Data.Result) != 1 {
			return false
		}
		value, _ = res.Data.Result[0].Value[1].(string)
		return value == fmt.Sprint(calls)
	}, func() string { return "last value " + value + "\nprometheus output:\n" + out.tail() })

	// The histogram buckets carry exemplars that point at the requests' traces.
	eventually(t, 30*time.Second, "Prometheus returning an exemplar of a request's trace", func() bool {
		var res struct {
			Data []struct {
				Exemplars []struct {
					Labels map[string]string `json:"labels"`
				} `json:"exemplars"`
			} `json:"data"`
		}
		now := time.Now()
		q := url.Values{"query": {`http_server_request_duration_seconds_bucket{http_route="/items/{id}"}`},
			"start": {fmt.Sprint(now.Add(-5 * time.Minute).Unix())}, "end": {fmt.Sprint(now.Add(time.Minute).Unix())}}
		if getJSON(promURL+"/api/v1/query_exemplars?"+q.Encode(), &res) != nil {
			return false
		}
		for _, series := range res.Data {
			for _, e := range series.Exemplars {
				if traceIDs[e.Labels["trace_id"]] {
					return true
				}
			}
		}
		return false
	}, func() string { return "prometheus output:\n" + out.tail() })
}

func getJSON(u string, v any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// otlpSink is where the collector forwards what it received (otlp_http exporter), decoded.
type otlpSink struct {
	mu      sync.Mutex
	spans   []sinkSpan
	metrics map[string]map[string]bool // service -> metric names
	logs    []sinkLog
}

type sinkSpan struct {
	service, name, traceID, spanID, parentID string
	kind                                     tracepb.Span_SpanKind
}

type sinkLog struct{ service, body, traceID, spanID string }

func resourceService(attrs []*commonpb.KeyValue) string {
	for _, kv := range attrs {
		if kv.Key == "service.name" {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func (s *otlpSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var resp proto.Message
	switch r.URL.Path {
	case "/v1/traces":
		var req coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		for _, rs := range req.ResourceSpans {
			svc := resourceService(rs.GetResource().GetAttributes())
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					s.spans = append(s.spans, sinkSpan{service: svc, name: sp.Name, kind: sp.Kind,
						traceID: hex.EncodeToString(sp.TraceId), spanID: hex.EncodeToString(sp.SpanId),
						parentID: hex.EncodeToString(sp.ParentSpanId)})
				}
			}
		}
		resp = &coltrace.ExportTraceServiceResponse{}
	case "/v1/metrics":
		var req colmetrics.ExportMetricsServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		for _, rm := range req.ResourceMetrics {
			svc := resourceService(rm.GetResource().GetAttributes())
			if s.metrics[svc] == nil {
				s.metrics[svc] = map[string]bool{}
			}
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					s.metrics[svc][m.Name] = true
				}
			}
		}
		resp = &colmetrics.ExportMetricsServiceResponse{}
	case "/v1/logs":
		var req collogs.ExportLogsServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		for _, rl := range req.ResourceLogs {
			svc := resourceService(rl.GetResource().GetAttributes())
			for _, sl := range rl.ScopeLogs {
				for _, lr := range sl.LogRecords {
					s.logs = append(s.logs, sinkLog{service: svc, body: lr.GetBody().GetStringValue(),
						traceID: hex.EncodeToString(lr.TraceId), spanID: hex.EncodeToString(lr.SpanId)})
				}
			}
		}
		resp = &collogs.ExportLogsServiceResponse{}
	default:
		http.NotFound(w, r)
		return
	}
	b, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(b)
}

func (s *otlpSink) snapshot() ([]sinkSpan, map[string]map[string]bool, []sinkLog) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]map[string]bool{}
	for svc, names := range s.metrics {
		m[svc] = map[string]bool{}
		for n := range names {
			m[svc][n] = true
		}
	}
	return append([]sinkSpan(nil), s.spans...), m, append([]sinkLog(nil), s.logs...)
}

// waitListening waits until something accepts connections on addr.
func waitListening(t *testing.T, addr string, out *lockedBuffer) {
	t.Helper()
	eventually(t, 30*time.Second, "the collector listening on "+addr, func() bool {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	}, out.tail)
}

// Two in-process services export traces, metrics and logs to a real OpenTelemetry Collector, A over
// OTLP/HTTP and B over OTLP/gRPC. A calls B through Transport; the collector forwards everything
// to a sink that decodes it, and prints it with its debug exporter.
func TestOTLPThroughCollector(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an OpenTelemetry Collector; skipped with -short")
	}
	bin := findBinary(t, "otelcol-chassis", "scripts/install-otelcol.sh")

	sink := &otlpSink{metrics: map[string]map[string]bool{}}
	sinkSrv := httptest.NewServer(sink)
	t.Cleanup(sinkSrv.Close)

	httpPort, grpcPort := freePort(t), freePort(t)
	cfg := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:%d
      grpc:
        endpoint: 127.0.0.1:%d
exporters:
  debug:
    verbosity: detailed
  otlp_http:
    endpoint: %s
    compression: none
    retry_on_failure:
      enabled: false
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug, otlp_http]
    metrics:
      receivers: [otlp]
      exporters: [debug, otlp_http]
    logs:
      receivers: [otlp]
      exporters: [debug, otlp_http]
`, httpPort, grpcPort, sinkSrv.URL)
	cfgPath := filepath.Join(t.TempDir(), "otelcol.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out := startProcess(t, bin, "--config", "file:"+cfgPath)
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", httpPort), out)
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", grpcPort), out)

	common := []string{"OTEL_TRACES_SAMPLER", "always_on", "OTEL_LOGS_EXPORTER", "otlp",
		"OTEL_METRICS_EXPORTER", "otlp", "OTEL_BSP_SCHEDULE_DELAY", "100"}
	telB, err := telemetry.New(context.Background(), telemetry.Settings{ServiceName: "pricing", LogOutput: io.Discard,
		Lookup: telemetrytest.Env(append(common, "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
			"OTEL_EXPORTER_OTLP_ENDPOINT", fmt.Sprintf("http://127.0.0.1:%d", grpcPort))...)})
	if err != nil {
		t.Fatal(err)
	}
	telA, err := telemetry.New(context.Background(), telemetry.Settings{ServiceName: "gateway", LogOutput: io.Discard,
		Lookup: telemetrytest.Env(append(common,
			"OTEL_EXPORTER_OTLP_ENDPOINT", fmt.Sprintf("http://127.0.0.1:%d", httpPort))...)})
	if err != nil {
		t.Fatal(err)
	}

	muxB := http.NewServeMux()
	muxB.HandleFunc("GET /price/{id}", func(w http.ResponseWriter, r *http.Request) {
		telB.For(r.Context()).Info("priced item")
		_, _ = io.WriteString(w, "9.99")
	})
	srvB := httptest.NewServer(telB.Handler(muxB))
	t.Cleanup(srvB.Close)
	client := &http.Client{Transport: telA.Transport(nil)}
	muxA := http.NewServeMux()
	muxA.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		telA.For(r.Context()).Info("asking pricing")
		req, _ := http.NewRequestWithContext(telemetry.WithURLTemplate(r.Context(), "/price/{id}"),
			"GET", srvB.URL+"/price/"+r.PathValue("id"), nil)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		_, _ = io.Copy(w, resp.Body)
	})
	srvA := httptest.NewServer(telA.Handler(muxA))
	t.Cleanup(srvA.Close)

	resp, err := http.Get(srvA.URL + "/items/7")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if string(body) != "9.99" {
		t.Fatalf("gateway answered %q", body)
	}
	// Shutdown is the flush: everything must reach the collector within its deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := telA.Shutdown(ctx); err != nil {
		t.Errorf("shutdown A: %v", err)
	}
	if err := telB.Shutdown(ctx); err != nil {
		t.Errorf("shutdown B: %v", err)
	}

	var serverA, clientA, serverB sinkSpan
	diag := func() string {
		spans, metrics, logs := sink.snapshot()
		return fmt.Sprintf("sink spans %+v\nmetrics %v\nlogs %+v\ncollector output:\n%s", spans, metrics, logs, out.tail())
	}
	eventually(t, 30*time.Second, "the three spans reaching the sink", func() bool {
		spans, _, _ := sink.snapshot()
		for _, s := range spans {
			switch {
			case s.service == "gateway" && s.name == "GET /items/{id}" && s.kind == tracepb.Span_SPAN_KIND_SERVER:
				serverA = s
			case s.service == "gateway" && s.name == "GET /price/{id}" && s.kind == tracepb.Span_SPAN_KIND_CLIENT:
				clientA = s
			case s.service == "pricing" && s.name == "GET /price/{id}" && s.kind == tracepb.Span_SPAN_KIND_SERVER:
				serverB = s
			}
		}
		return serverA.spanID != "" && clientA.spanID != "" && serverB.spanID != ""
	}, diag)
	if serverA.traceID != clientA.traceID || clientA.traceID != serverB.traceID {
		t.Errorf("trace ids differ: A server %s, A client %s, B server %s", serverA.traceID, clientA.traceID, serverB.traceID)
	}
	if clientA.parentID != serverA.spanID || serverB.parentID != clientA.spanID {
		t.Errorf("parent chain broken: A server %s <- A client %s (parent %s) <- B server (parent %s)",
			serverA.spanID, clientA.spanID, clientA.parentID, serverB.parentID)
	}
	if serverA.parentID != "" {
		t.Errorf("A's server span should be a root, has parent %s", serverA.parentID)
	}

	eventually(t, 30*time.Second, "metrics and logs of both services reaching the sink", func() bool {
		_, metrics, logs := sink.snapshot()
		var logA, logB bool
		for _, l := range logs {
			logA = logA || (l.service == "gateway" && l.body == "asking pricing" && l.traceID == serverA.traceID && l.spanID == serverA.spanID)
			logB = logB || (l.service == "pricing" && l.body == "priced item" && l.traceID == serverA.traceID && l.spanID == serverB.spanID)
		}
		return metrics["gateway"]["http.server.request.duration"] && metrics["gateway"]["http.client.request.duration"] &&
			metrics["pricing"]["http.server.request.duration"] && metrics["pricing"]["go.goroutine.count"] && logA && logB
	}, diag)

	// The collector's own debug exporter printed the same trace.
	eventually(t, 10*time.Second, "the collector's debug output showing the trace", func() bool {
		o := out.String()
		return strings.Contains(o, serverA.traceID) && strings.Contains(o, "GET /price/{id}")
	}, out.tail)
}
