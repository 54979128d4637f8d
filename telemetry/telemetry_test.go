package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/cloudchassis/kit/internal/syncbuf"
	"github.com/cloudchassis/kit/telemetry"
	"github.com/cloudchassis/kit/telemetry/semconv"
	"github.com/cloudchassis/kit/telemetry/telemetrytest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	parentTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpan  = "00f067aa0ba902b7"
)

func newMux(t *telemetry.Telemetry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		t.For(r.Context()).Info("loading item", zap.String("id", r.PathValue("id")))
		_, _ = io.WriteString(w, "item "+r.PathValue("id"))
	})
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusServiceUnavailable)
	})
	return mux
}

func TestHandlerContinuesTraceAndRecordsRoute(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{ServiceName: "catalog", AccessLog: true, AccessLogSuccessSample: 1})
	h := tel.Handler(newMux(tel))

	req := httptest.NewRequest("GET", "/items/42", nil)
	req.Header.Set("traceparent", "00-"+parentTrace+"-"+parentSpan+"-01")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 200 || w.Body.String() != "item 42" {
		t.Fatalf("response %d %q", w.Code, w.Body.String())
	}

	span := rec.AssertSpan(t, "GET /items/{id}",
		attribute.String("http.route", "/items/{id}"),
		attribute.String("http.request.method", "GET"),
		attribute.Int("http.response.status_code", 200),
		attribute.String("url.path", "/items/42"),
		attribute.String("url.scheme", "http"))
	if span == nil {
		t.FailNow()
	}
	if span.SpanKind() != trace.SpanKindServer {
		t.Errorf("kind %v", span.SpanKind())
	}
	if got := span.SpanContext().TraceID().String(); got != parentTrace {
		t.Errorf("trace id %s, want the caller's %s", got, parentTrace)
	}
	if got := span.Parent().SpanID().String(); got != parentSpan || !span.Parent().IsRemote() {
		t.Errorf("parent %s (remote %v), want remote %s", got, span.Parent().IsRemote(), parentSpan)
	}

	n := rec.HistogramCount(t, semconv.HTTPServerRequestDuration,
		attribute.String("http.route", "/items/{id}"),
		attribute.String("http.request.method", "GET"),
		attribute.Int("http.response.status_code", 200),
		attribute.String("url.scheme", "http"))
	if n != 1 {
		t.Errorf("request duration count %d, want 1", n)
	}
	if v := rec.CounterValue(t, semconv.HTTPServerActiveRequests); v != 0 {
		t.Errorf("active requests %v after the request, want 0", v)
	}

	// Both the handler's line and the access log line carry the span's ids.
	logs := rec.LogsWithTraceID(span.SpanContext().TraceID())
	if len(logs) != 2 {
		t.Fatalf("%d log lines with the trace id, want 2: %+v", len(logs), rec.Logs.All())
	}
	for _, e := range logs {
		if e.ContextMap()[telemetry.FieldSpanID] != span.SpanContext().SpanID().String() {
			t.Errorf("line %q has span_id %v, want %s", e.Message, e.ContextMap()[telemetry.FieldSpanID], span.SpanContext().SpanID())
		}
	}
	access := rec.Logs.FilterMessage("request").All()
	if len(access) != 1 {
		t.Fatalf("%d access log lines, want 1", len(access))
	}
	f := access[0].ContextMap()
	if f["route"] != "/items/{id}" || f["status"] != int64(200) || f["bytes"] != int64(7) || f["service"] != "catalog" {
		t.Errorf("access log fields %v", f)
	}
}

func TestHandlerLogLinesJSONCarryTraceID(t *testing.T) {
	var out syncbuf.Buffer
	tel, rec := telemetrytest.New(t, telemetry.Settings{ServiceName: "svc", LogOutput: &out})
	h := tel.Handler(newMux(tel))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/items/7", nil))
	span := rec.AssertSpan(t, "GET /items/{id}")
	if span == nil {
		t.FailNow()
	}
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &line); err != nil {
		t.Fatalf("log output %q: %v", out.String(), err)
	}
	if line["trace_id"] != span.SpanContext().TraceID().String() || line["msg"] != "loading item" || line["level"] != "info" {
		t.Errorf("log line %v, want trace_id %s", line, span.SpanContext().TraceID())
	}
}

func TestHandlerServerErrorAndUnmatched(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{ServiceName: "svc"})
	h := tel.Handler(newMux(tel))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/fail", nil))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/nope/123", nil))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("BREW", "/nope/456", nil))

	s := rec.AssertSpan(t, "POST /fail", attribute.String("error.type", "503"))
	if s != nil && s.Status().Code.String() != "Error" {
		t.Errorf("5xx span status %v, want Error", s.Status())
	}
	if n := rec.HistogramCount(t, semconv.HTTPServerRequestDuration,
		attribute.String("http.route", "/fail"), attribute.String("error.type", "503")); n != 1 {
		t.Errorf("5xx count %d", n)
	}
	// No pattern matched: no per-path series, span named after the method only.
	rec.AssertSpan(t, "GET", attribute.Int("http.response.status_code", 404))
	rec.AssertSpan(t, "HTTP", attribute.String("http.request.method", "_OTHER"),
		attribute.String("http.request.method_original", "BREW"))
	if n := rec.HistogramCount(t, semconv.HTTPServerRequestDuration,
		attribute.String("http.route", telemetry.UnmatchedRoute)); n != 2 {
		t.Errorf("unmatched count %d, want 2", n)
	}
}

func TestSetRouteWhenRequestReplaced(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /a/{x}", func(w http.ResponseWriter, r *http.Request) {
		telemetry.SetRoute(r.Context(), routeFromPattern(r.Pattern))
	})
	// A middleware that replaces the request hides r.Pattern from Handler.
	timeout := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		mux.ServeHTTP(w, r.WithContext(ctx))
	})
	tel.Handler(timeout).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/a/1", nil))
	rec.AssertSpan(t, "GET /a/{x}", attribute.String("http.route", "/a/{x}"))
}

func routeFromPattern(p string) string { return p[strings.IndexByte(p, '/'):] }

func TestHandlerPanicIsRecorded(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic did not reach the outer recover")
			}
		}()
		tel.Handler(mux).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/panic", nil))
	}()
	rec.AssertSpan(t, "GET /panic", attribute.Int("http.response.status_code", 500))
	if v := rec.CounterValue(t, semconv.HTTPServerActiveRequests); v != 0 {
		t.Errorf("active requests %v after a panic", v)
	}
}

func TestActiveRequestsDuringRequest(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{})
	var during float64
	h := tel.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		during = rec.CounterValue(t, semconv.HTTPServerActiveRequests, attribute.String("http.request.method", "PUT"))
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("PUT", "/x", nil))
	if during != 1 {
		t.Errorf("active requests during the request %v, want 1", during)
	}
}

func TestResponseWriterKeepsInterfaces(t *testing.T) {
	tel, _ := telemetrytest.New(t, telemetry.Settings{})
	var flusher, hijacker bool
	h := tel.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, flusher = w.(http.Flusher)
		_, hijacker = w.(http.Hijacker)
		if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
			t.Errorf("ResponseController through the wrapper: %v", err)
		}
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if !flusher || !hijacker {
		t.Errorf("HTTP/1 writer: flusher %v hijacker %v, want both", flusher, hijacker)
	}
	// httptest.ResponseRecorder cannot hijack: neither may the wrapper claim to.
	tel.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, hijacker = w.(http.Hijacker)
	})).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if hijacker {
		t.Error("wrapper claims Hijacker over a writer that has none")
	}
}

// Two services in one process: A's handler calls B through A's Transport. B's server span must
// be the child of A's client span, which is the child of A's server span, all in one trace.
func TestTwoServicesOneTrace(t *testing.T) {
	telB, recB := telemetrytest.New(t, telemetry.Settings{ServiceName: "b"})
	muxB := http.NewServeMux()
	muxB.HandleFunc("GET /price/{id}", func(w http.ResponseWriter, r *http.Request) {
		telB.For(r.Context()).Info("pricing")
		_, _ = io.WriteString(w, "9.99")
	})
	srvB := httptest.NewServer(telB.Handler(muxB))
	defer srvB.Close()

	telA, recA := telemetrytest.New(t, telemetry.Settings{ServiceName: "a"})
	client := &http.Client{Transport: telA.Transport(srvB.Client().Transport)}
	muxA := http.NewServeMux()
	muxA.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		ctx := telemetry.WithURLTemplate(r.Context(), "/price/{id}")
		req, _ := http.NewRequestWithContext(ctx, "GET", srvB.URL+"/price/"+r.PathValue("id"), nil)
		req.Header.Set("X-Caller", "a")
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer resp.Body.Close()
		if req.Header.Get("traceparent") != "" || len(req.Header) != 1 {
			t.Errorf("Transport modified the caller's request headers: %v", req.Header)
		}
		_, _ = io.Copy(w, resp.Body)
	})
	w := httptest.NewRecorder()
	telA.Handler(muxA).ServeHTTP(w, httptest.NewRequest("GET", "/items/1", nil))
	if w.Body.String() != "9.99" {
		t.Fatalf("body %q", w.Body.String())
	}

	serverA := recA.AssertSpan(t, "GET /items/{id}")
	clientA := recA.AssertSpan(t, "GET /price/{id}", attribute.String("url.template", "/price/{id}"),
		attribute.Int("http.response.status_code", 200))
	serverB := recB.AssertSpan(t, "GET /price/{id}", attribute.String("http.route", "/price/{id}"))
	if serverA == nil || clientA == nil || serverB == nil {
		t.FailNow()
	}
	if clientA.SpanKind() != trace.SpanKindClient {
		t.Errorf("client span kind %v", clientA.SpanKind())
	}
	tid := serverA.SpanContext().TraceID()
	if clientA.SpanContext().TraceID() != tid || serverB.SpanContext().TraceID() != tid {
		t.Errorf("trace ids differ: %s %s %s", tid, clientA.SpanContext().TraceID(), serverB.SpanContext().TraceID())
	}
	if clientA.Parent().SpanID() != serverA.SpanContext().SpanID() {
		t.Error("A's client span is not the child of A's server span")
	}
	if serverB.Parent().SpanID() != clientA.SpanContext().SpanID() || !serverB.Parent().IsRemote() {
		t.Error("B's server span is not the remote child of A's client span")
	}
	if len(recB.LogsWithTraceID(tid)) != 1 {
		t.Errorf("B's log line does not carry the trace id %s", tid)
	}
	host := strings.TrimPrefix(srvB.URL, "http://")
	if n := recA.HistogramCount(t, semconv.HTTPClientRequestDuration,
		attribute.String("server.address", host[:strings.IndexByte(host, ':')]),
		attribute.String("url.template", "/price/{id}"),
		attribute.Int("http.response.status_code", 200)); n != 1 {
		t.Errorf("client duration count %d, want 1", n)
	}
}

func TestTransportError(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{})
	failing := roundTripFunc(func(*http.Request) (*http.Response, error) {
		return nil, context.DeadlineExceeded
	})
	req, _ := http.NewRequest("GET", "http://pricing/x", nil)
	if _, err := tel.Transport(failing).RoundTrip(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v", err)
	}
	rec.AssertSpan(t, "GET", attribute.String("error.type", "timeout"), attribute.String("server.address", "pricing"))
	if n := rec.HistogramCount(t, semconv.HTTPClientRequestDuration,
		attribute.String("error.type", "timeout"), attribute.Int("server.port", 80)); n != 1 {
		t.Errorf("failed call count %d", n)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestClientAddressCardinalityBounded(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{}, telemetry.WithRouteCacheSize(2))
	ok := roundTripFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	})
	tr := tel.Transport(ok)
	for i := range 5 {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://host%d/", i), nil)
		if _, err := tr.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
	}
	if n := rec.HistogramCount(t, semconv.HTTPClientRequestDuration, attribute.String("server.address", "_OTHER")); n != 3 {
		t.Errorf("%d calls recorded as _OTHER, want 3 (cache of 2)", n)
	}
}

func TestForWithoutSpanIsLogger(t *testing.T) {
	tel, _ := telemetrytest.New(t, telemetry.Settings{})
	if tel.For(context.Background()) != tel.Logger() {
		t.Error("For without a span must return Logger itself")
	}
	// Inside Handler, the derived logger is built once per request.
	h := tel.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tel.For(r.Context()) != tel.For(r.Context()) {
			t.Error("For built a new logger on the second call in one request")
		}
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
}

func TestLevelHandlerChangesLevelAtRuntime(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{LogLevel: "info"})
	tel.Logger().Debug("hidden")
	tel.Slog().Debug("hidden too")
	w := httptest.NewRecorder()
	tel.LevelHandler().ServeHTTP(w, httptest.NewRequest("PUT", "/loglevel", strings.NewReader(`{"level":"debug"}`)))
	if w.Code != 200 {
		t.Fatalf("PUT level: %d %s", w.Code, w.Body)
	}
	tel.Logger().Debug("shown")
	tel.Slog().Debug("shown too")
	got := rec.Logs.FilterLevelExact(zap.DebugLevel).All()
	if len(got) != 2 || got[0].Message != "shown" || got[1].Message != "shown too" {
		t.Errorf("debug lines %v", got)
	}
	w = httptest.NewRecorder()
	tel.LevelHandler().ServeHTTP(w, httptest.NewRequest("GET", "/loglevel", nil))
	if !strings.Contains(w.Body.String(), `"level":"debug"`) {
		t.Errorf("GET level: %s", w.Body)
	}
}

func TestSlogBridge(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{ServiceName: "s"})
	ctx, span := tel.Tracer("test").Start(context.Background(), "op")
	log := tel.Slog().With("component", "cache").WithGroup("req")
	log.InfoContext(ctx, "hit", "key", "k1", slog.Int("size", 3), slog.Group("src", "node", "n1"))
	span.End()
	e := rec.LogsWithTraceID(span.SpanContext().TraceID())
	if len(e) != 1 {
		t.Fatalf("slog line with trace id: %v", rec.Logs.All())
	}
	m := e[0].ContextMap()
	req, _ := m["req"].(map[string]any)
	src, _ := req["src"].(map[string]any)
	if m["component"] != "cache" || m["service"] != "s" || req["key"] != "k1" || req["size"] != int64(3) || src["node"] != "n1" {
		t.Errorf("slog fields %v", m)
	}
}

func TestEnvErrorsReportedTogether(t *testing.T) {
	_, err := telemetry.New(context.Background(), telemetry.Settings{
		LogLevel: "loud",
		Lookup: telemetrytest.Env(
			"OTEL_TRACES_SAMPLER", "sometimes",
			"OTEL_EXPORTER_OTLP_PROTOCOL", "http/json",
			"OTEL_BSP_MAX_QUEUE_SIZE", "-3"),
	})
	if err == nil {
		t.Fatal("New accepted bad settings")
	}
	for _, key := range []string{"LOG_LEVEL", "OTEL_TRACES_SAMPLER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_BSP_MAX_QUEUE_SIZE"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not mention %s: %v", key, err)
		}
	}
	var envErr *telemetry.EnvError
	if !errors.As(err, &envErr) {
		t.Errorf("error %T is not an *EnvError", err)
	}
}

// Lookup is the only source: variables in the process environment must not reach the exporter.
func TestLookupControlsOTLPExporter(t *testing.T) {
	var mu sync.Mutex
	var got []http.Header
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Clone())
		mu.Unlock()
		if r.URL.Path != "/v1/traces" {
			t.Errorf("exporter posted to %s", r.URL.Path)
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-from=process")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/nowhere")
	tel, err := telemetry.New(context.Background(), telemetry.Settings{ServiceName: "svc", LogOutput: io.Discard,
		Lookup: telemetrytest.Env(
			"OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL,
			"OTEL_EXPORTER_OTLP_HEADERS", "x-from=lookup,authorization=Bearer%20t0ken",
			"OTEL_METRICS_EXPORTER", "none",
		)}, telemetry.WithoutRuntimeMetrics())
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer("t").Start(context.Background(), "op")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 {
		t.Fatalf("collector got %d exports, want 1", len(got))
	}
	if got[0].Get("X-From") != "lookup" || got[0].Get("Authorization") != "Bearer t0ken" {
		t.Errorf("headers %v: want the ones from Lookup only", got[0])
	}
}

func TestSDKDisabled(t *testing.T) {
	rec := telemetrytest.NewRecorder()
	dis, err := telemetry.New(context.Background(), telemetry.Settings{AccessLog: true, AccessLogSuccessSample: 1, LogOutput: io.Discard,
		Lookup: telemetrytest.Env("OTEL_SDK_DISABLED", "true")}, rec.Options()...)
	if err != nil {
		t.Fatal(err)
	}
	defer dis.Shutdown(context.Background())
	w := httptest.NewRecorder()
	dis.MetricsHandler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != http.StatusNotFound {
		t.Errorf("metrics with the SDK disabled: %d", w.Code)
	}
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("traceparent", "00-"+parentTrace+"-"+parentSpan+"-01")
	dis.Handler(http.NotFoundHandler()).ServeHTTP(httptest.NewRecorder(), req)
	tid, _ := trace.TraceIDFromHex(parentTrace)
	if len(rec.LogsWithTraceID(tid)) != 1 {
		t.Errorf("the caller's trace id is not in the access log with the SDK disabled: %v", rec.Logs.All())
	}
	if len(rec.Spans.Ended()) != 0 {
		t.Errorf("%d spans recorded with the SDK disabled", len(rec.Spans.Ended()))
	}
}

// Without any span exporter, spans are not recorded but still get ids, so logs stay correlated.
func TestNoExporterStillCorrelatesLogs(t *testing.T) {
	rec := telemetrytest.NewRecorder()
	tel, err := telemetry.New(context.Background(), telemetry.Settings{AccessLog: true, AccessLogSuccessSample: 1, LogOutput: io.Discard,
		Lookup: telemetrytest.Env("OTEL_METRICS_EXPORTER", "none")}, telemetry.WithLoggerCore(rec.Core()), telemetry.WithoutRuntimeMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	var sc trace.SpanContext
	tel.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sc = trace.SpanContextFromContext(r.Context())
		if trace.SpanFromContext(r.Context()).IsRecording() {
			t.Error("span recorded with nowhere to export it")
		}
	})).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	if !sc.IsValid() || len(rec.LogsWithTraceID(sc.TraceID())) != 1 {
		t.Errorf("no correlated access log line (span context %v)", sc)
	}
}

func TestSamplerFromEnv(t *testing.T) {
	rec := telemetrytest.NewRecorder()
	tel, err := telemetry.New(context.Background(), telemetry.Settings{LogOutput: io.Discard,
		Lookup: telemetrytest.Env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG", "0",
			"OTEL_METRICS_EXPORTER", "none")}, append(rec.Options(), telemetry.WithoutRuntimeMetrics())...)
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	h := tel.Handler(http.NotFoundHandler())
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/root", nil))
	if n := len(rec.Spans.Ended()); n != 0 {
		t.Errorf("ratio 0 sampled %d root spans", n)
	}
	req := httptest.NewRequest("GET", "/child", nil)
	req.Header.Set("traceparent", "00-"+parentTrace+"-"+parentSpan+"-01")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if n := len(rec.Spans.Ended()); n != 1 {
		t.Errorf("a sampled parent must be followed: %d spans", n)
	}
}

// slowExporter blocks every export until its context ends, like a collector that stopped answering.
type slowExporter struct {
	mu       sync.Mutex
	exported int
}

func (e *slowExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	<-ctx.Done()
	return ctx.Err()
}
func (e *slowExporter) Shutdown(ctx context.Context) error { return nil }

type memExporter struct {
	mu    sync.Mutex
	names []string
}

func (e *memExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, s := range spans {
		e.names = append(e.names, s.Name())
	}
	return nil
}
func (e *memExporter) Shutdown(context.Context) error { return nil }

func TestShutdownFlushesPendingSpans(t *testing.T) {
	mem := &memExporter{}
	tel, err := telemetry.New(context.Background(), telemetry.Settings{LogOutput: io.Discard,
		Lookup: telemetrytest.Env("OTEL_METRICS_EXPORTER", "none", "OTEL_BSP_SCHEDULE_DELAY", "600000")},
		telemetry.WithSpanExporter(mem), telemetry.WithoutRuntimeMetrics())
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer("t").Start(context.Background(), "pending")
	span.End()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mem.mu.Lock()
	defer mem.mu.Unlock()
	if len(mem.names) != 1 || mem.names[0] != "pending" {
		t.Errorf("exported %v after Shutdown, want [pending]", mem.names)
	}
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Errorf("second Shutdown: %v, want the first result (nil)", err)
	}
}

func TestShutdownRespectsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tel, err := telemetry.New(context.Background(), telemetry.Settings{LogOutput: io.Discard,
			Lookup: telemetrytest.Env("OTEL_METRICS_EXPORTER", "none", "OTEL_BSP_EXPORT_TIMEOUT", "60000")},
			telemetry.WithSpanExporter(&slowExporter{}), telemetry.WithoutRuntimeMetrics())
		if err != nil {
			t.Fatal(err)
		}
		_, span := tel.Tracer("t").Start(context.Background(), "stuck")
		span.End()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err = tel.Shutdown(ctx)
		if took := time.Since(start); took != 200*time.Millisecond {
			t.Errorf("Shutdown took %v, want exactly the 200ms deadline", took)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown error %v, want DeadlineExceeded", err)
		}
		if again := tel.Shutdown(context.Background()); !errors.Is(again, context.DeadlineExceeded) {
			t.Errorf("second Shutdown %v, want the first result", again)
		}
		// The SDK's abandoned export still runs until OTEL_BSP_EXPORT_TIMEOUT; let the bubble's fake
		// clock reach it so that its goroutines end before the bubble does.
		time.Sleep(time.Minute + time.Second)
	})
}

func TestMetricsHandlerExposesHistogramWithExemplar(t *testing.T) {
	rec := telemetrytest.NewRecorder()
	tel, err := telemetry.New(context.Background(), telemetry.Settings{ServiceName: "svc", LogOutput: io.Discard,
		Lookup: telemetrytest.Env("OTEL_TRACES_SAMPLER", "always_on")}, telemetry.WithSpanProcessor(rec.Spans))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	tel.Handler(newMux(tel)).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/items/1", nil))
	span := rec.AssertSpan(t, "GET /items/{id}")
	if span == nil {
		t.FailNow()
	}

	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0")
	w := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(w, req)
	body := w.Body.String()
	var bucket string
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "http_server_request_duration_seconds_bucket{") && strings.Contains(line, `http_route="/items/{id}"`) &&
			strings.Contains(line, "# {") {
			bucket = line
		}
	}
	if bucket == "" {
		t.Fatalf("no histogram bucket with an exemplar for the route in:\n%s", body)
	}
	if !strings.Contains(bucket, `trace_id="`+span.SpanContext().TraceID().String()+`"`) {
		t.Errorf("exemplar does not link to the request's trace %s: %s", span.SpanContext().TraceID(), bucket)
	}
	for _, want := range []string{"go_goroutine_count", "process_cpu_time_seconds_total", `service_name="svc"`} {
		if !strings.Contains(body, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
}

func TestSetGlobalIsExplicit(t *testing.T) {
	tel, _ := telemetrytest.New(t, telemetry.Settings{})
	if _, ok := tel.Propagator().(propagation.TextMapPropagator); !ok {
		t.Fatal("no propagator")
	}
	fields := tel.Propagator().Fields()
	slices.Sort(fields)
	if strings.Join(fields, ",") != "baggage,traceparent,tracestate" {
		t.Errorf("propagator fields %v", fields)
	}
}

func TestAccessLogErrorsOnly(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{AccessLog: true, AccessLogSuccessSample: 0})
	h := tel.Handler(newMux(tel))
	for range 20 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/items/1", nil))
	}
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/fail", nil))
	access := rec.Logs.FilterMessage("request").All()
	if len(access) != 1 || access[0].ContextMap()["status"] != int64(503) || access[0].Level != zap.ErrorLevel {
		t.Errorf("access log lines %v, want only the 503 at error level", access)
	}
	if _, err := telemetry.New(context.Background(), telemetry.Settings{AccessLogSuccessSample: 1.5}); err == nil {
		t.Error("a sample above 1 was accepted")
	}
}
