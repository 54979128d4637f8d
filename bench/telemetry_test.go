package bench

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cloudchassis/kit/telemetry"
)

// The telemetry benchmarks compare Chassis' server instrumentation with a bare handler and with
// stock otelhttp on the same TracerProvider and MeterProvider (a ManualReader, never collected, and
// a batch span processor with a discarding exporter), sampled and unsampled; the request-scoped
// logger with raw zap; and metric recording with the Prometheus client.
//
//	cd bench && go test -run '^$' -bench Telemetry -benchmem -count 6
//
// Besides ns/op (wall time), each benchmark reports cpu-ns/op: the process's CPU time (user +
// system, all goroutines, GC included) per operation. On a shared, loaded machine wall time
// includes waiting for a CPU; CPU time does not, so compare ratios of cpu-ns/op there.

// telDiscardExporter drops spans, so the benchmark measures instrumentation, not export.
type telDiscardExporter struct{}

func (telDiscardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (telDiscardExporter) Shutdown(context.Context) error                             { return nil }

// telCPU starts measuring process CPU time; the returned func reports it per operation. Call it
// right before the b.Loop loop and defer the result.
func telCPU(b *testing.B) func() {
	start := telCPUTime()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(telCPUTime()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

func telCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func telLookup(pairs ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(pairs); i += 2 {
		m[pairs[i]] = pairs[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func newBenchTelemetry(b *testing.B, sampler string, accessLog bool) *telemetry.Telemetry {
	b.Helper()
	tel, err := telemetry.New(context.Background(), telemetry.Settings{
		ServiceName:            "bench",
		LogOutput:              io.Discard,
		AccessLog:              accessLog,
		AccessLogSuccessSample: 1,
		Lookup:                 telLookup("OTEL_TRACES_SAMPLER", sampler, "OTEL_METRICS_EXPORTER", "none"),
	},
		telemetry.WithSpanExporter(telDiscardExporter{}),
		telemetry.WithMetricReader(sdkmetric.NewManualReader()),
		telemetry.WithoutRuntimeMetrics())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

// telWriter is a reusable ResponseWriter, so that no benchmark pays for httptest.ResponseRecorder.
type telWriter struct {
	h      http.Header
	status int
}

func (w *telWriter) Header() http.Header         { return w.h }
func (w *telWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *telWriter) WriteHeader(code int)        { w.status = code }

func telMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello")
	})
	return mux
}

func serveLoop(b *testing.B, h http.Handler) {
	b.Helper()
	req, _ := http.NewRequest("GET", "http://example.com/items/42", nil)
	req.RemoteAddr = "127.0.0.1:50000"
	w := &telWriter{h: http.Header{}}
	h.ServeHTTP(w, req) // warm the attribute caches
	b.ReportAllocs()
	defer telCPU(b)()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}

func BenchmarkTelemetryServer(b *testing.B) {
	b.Run("bare", func(b *testing.B) { serveLoop(b, telMux()) })
	for _, mode := range []struct{ name, sampler string }{
		{"sampled", "always_on"},
		{"unsampled", "always_off"},
	} {
		b.Run("chassis-"+mode.name, func(b *testing.B) {
			tel := newBenchTelemetry(b, mode.sampler, false)
			serveLoop(b, tel.Handler(telMux()))
		})
		b.Run("chassis-"+mode.name+"-accesslog", func(b *testing.B) {
			tel := newBenchTelemetry(b, mode.sampler, true)
			serveLoop(b, tel.Handler(telMux()))
		})
		b.Run("otelhttp-"+mode.name, func(b *testing.B) {
			tel := newBenchTelemetry(b, mode.sampler, false)
			serveLoop(b, otelhttp.NewHandler(telMux(), "server",
				otelhttp.WithTracerProvider(tel.TracerProvider()),
				otelhttp.WithMeterProvider(tel.MeterProvider()),
				otelhttp.WithPropagators(tel.Propagator())))
		})
	}
}

func BenchmarkTelemetryLog(b *testing.B) {
	fields := func(i int) (zap.Field, zap.Field, zap.Field) {
		return zap.String("item", "sku-123"), zap.Int("qty", i), zap.Bool("cached", true)
	}
	b.Run("zap-raw", func(b *testing.B) {
		enc := zap.NewProductionEncoderConfig()
		enc.TimeKey = "ts"
		enc.EncodeTime = zapcore.RFC3339NanoTimeEncoder
		core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(io.Discard), zapcore.InfoLevel)
		log := zap.New(core, zap.AddCaller()).With(zap.String("service", "bench"))
		b.ReportAllocs()
		i := 0
		defer telCPU(b)()
		for b.Loop() {
			i++
			f1, f2, f3 := fields(i)
			log.Info("loaded item", f1, f2, f3)
		}
	})
	b.Run("chassis-logger", func(b *testing.B) {
		tel := newBenchTelemetry(b, "always_on", false)
		b.ReportAllocs()
		i := 0
		defer telCPU(b)()
		for b.Loop() {
			i++
			f1, f2, f3 := fields(i)
			tel.Logger().Info("loaded item", f1, f2, f3)
		}
	})
	// For(ctx) on a span outside Handler builds the derived logger on every call.
	b.Run("chassis-for-span", func(b *testing.B) {
		tel := newBenchTelemetry(b, "always_on", false)
		ctx, span := tel.Tracer("bench").Start(context.Background(), "op")
		defer span.End()
		b.ReportAllocs()
		i := 0
		defer telCPU(b)()
		for b.Loop() {
			i++
			f1, f2, f3 := fields(i)
			tel.For(ctx).Info("loaded item", f1, f2, f3)
		}
	})
	// Inside Handler the derived logger is cached per request: later lines cost what raw zap does.
	b.Run("chassis-for-request", func(b *testing.B) {
		tel := newBenchTelemetry(b, "always_on", false)
		var ctx context.Context
		tel.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ctx = r.Context() })).
			ServeHTTP(&telWriter{h: http.Header{}}, mustRequest())
		tel.For(ctx).Info("first line builds the logger")
		b.ReportAllocs()
		i := 0
		defer telCPU(b)()
		for b.Loop() {
			i++
			f1, f2, f3 := fields(i)
			tel.For(ctx).Info("loaded item", f1, f2, f3)
		}
	})
}

func mustRequest() *http.Request {
	r, _ := http.NewRequest("GET", "http://example.com/", nil)
	return r
}

func BenchmarkTelemetryMetric(b *testing.B) {
	tel := newBenchTelemetry(b, "always_off", false)
	m := tel.Meter("bench")
	set := attribute.NewSet(attribute.String("http.route", "/items/{id}"), attribute.String("http.request.method", "GET"),
		attribute.Int("http.response.status_code", 200))
	counterOpts := []metric.AddOption{metric.WithAttributeSet(set)}
	recordOpts := []metric.RecordOption{metric.WithAttributeSet(set)}
	ctx := context.Background()

	b.Run("otel-counter-cached-set", func(b *testing.B) {
		c, _ := m.Int64Counter("bench.counter")
		b.ReportAllocs()
		defer telCPU(b)()
		for b.Loop() {
			c.Add(ctx, 1, counterOpts...)
		}
	})
	b.Run("otel-counter-attrs-per-call", func(b *testing.B) {
		c, _ := m.Int64Counter("bench.counter2")
		b.ReportAllocs()
		defer telCPU(b)()
		for b.Loop() {
			c.Add(ctx, 1, metric.WithAttributes(attribute.String("http.route", "/items/{id}"),
				attribute.String("http.request.method", "GET"), attribute.Int("http.response.status_code", 200)))
		}
	})
	b.Run("prom-counter-labels-per-call", func(b *testing.B) {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bench_counter"}, []string{"route", "method", "code"})
		b.ReportAllocs()
		defer telCPU(b)()
		for b.Loop() {
			c.WithLabelValues("/items/{id}", "GET", strconv.Itoa(200)).Inc()
		}
	})
	b.Run("prom-counter-resolved", func(b *testing.B) {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bench_counter"}, []string{"route", "method", "code"}).
			WithLabelValues("/items/{id}", "GET", "200")
		b.ReportAllocs()
		defer telCPU(b)()
		for b.Loop() {
			c.Inc()
		}
	})
	b.Run("otel-histogram-cached-set", func(b *testing.B) {
		h, _ := m.Float64Histogram("bench.histogram", metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05,
			0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
		b.ReportAllocs()
		v := 0.0
		defer telCPU(b)()
		for b.Loop() {
			v += 0.001
			h.Record(ctx, v, recordOpts...)
		}
	})
	b.Run("prom-histogram-resolved", func(b *testing.B) {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "bench_histogram", Buckets: []float64{0.005,
			0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}}, []string{"route", "method", "code"}).
			WithLabelValues("/items/{id}", "GET", "200")
		b.ReportAllocs()
		v := 0.0
		defer telCPU(b)()
		for b.Loop() {
			v += 0.001
			h.Observe(v)
		}
	})
}
