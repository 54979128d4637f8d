package telemetry

import (
	"io"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap/zapcore"
)

// Defaults for Settings fields left empty.
const (
	DefaultLogLevel  = "info"
	DefaultLogFormat = "json"
	// DefaultRouteCacheSize bounds the cache of precomputed attribute sets per (route, method,
	// status, scheme, protocol). Routes come from ServeMux patterns, so the real number is small;
	// past the bound, attributes are built per request (correct, just slower).
	DefaultRouteCacheSize = 2048
)

// UnmatchedRoute is the http.route of requests that no ServeMux pattern matched (404s, scanners),
// so they cannot create one series per raw path.
const UnmatchedRoute = "unmatched"

// Settings are the values New needs. chassis fills them from its own environment variables
// (SERVICE_NAME, LOG_LEVEL, LOG_FORMAT, ACCESS_LOG_SAMPLE, ...); the standard OTEL_* variables are
// read by New itself through Lookup.
type Settings struct {
	ServiceName    string // service.name; OTEL_SERVICE_NAME overrides it; empty = "unknown_service:<exe>"
	ServiceVersion string // service.version
	InstanceID     string // service.instance.id; empty = a random UUID-like id per process

	LogLevel  string // debug | info | warn | error; default DefaultLogLevel
	LogFormat string // json | console; default DefaultLogFormat

	// AccessLog enables one log line per request in Handler. Failures (status >= 500) are always
	// logged; successes with probability AccessLogSuccessSample, between 0 and 1: 1 logs every
	// success, 0 none (failures only). chassis passes ACCESS_LOG_SAMPLE, whose default is 1.
	AccessLog              bool
	AccessLogSuccessSample float64

	// Lookup reads OTEL_* variables; nil means os.LookupEnv. Everything the SDK and the exporters
	// would read from the process environment is resolved through it, so a test can pass a map.
	Lookup func(key string) (string, bool)

	// LogOutput receives the log lines; nil means os.Stdout. It must be safe for concurrent writes
	// (zap serialises writes to it through zapcore.Lock).
	LogOutput io.Writer

	// LogBuffer, in bytes, buffers the lines written to an *os.File output (standard output by
	// default) so that a log line costs a memory copy instead of a write(2): lines are written by a
	// background write when the buffer fills, at least every LogFlushInterval, at once for a line of
	// level error or above from any logger but the access log, and by Shutdown and Logger().Sync.
	// When the output is slower than the service logs, loggers wait for it (lines are never
	// dropped). 0 writes every line at once, unbuffered. Other io.Writers are never buffered: they
	// are in memory or do their own buffering. chassis passes LOG_BUFFER (DefaultLogBuffer).
	LogBuffer int
}

// An Option changes how New builds a Telemetry, in the style of zap's options.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
	spanProcessors []sdktrace.SpanProcessor
	spanExporters  []sdktrace.SpanExporter
	metricReaders  []sdkmetric.Reader
	logProcessors  []sdklog.Processor
	cores          []zapcore.Core
	propagator     propagation.TextMapPropagator
	routeCacheSize int
	noRuntime      bool
}

// WithTracerProvider makes Telemetry use tp instead of building one from OTEL_* variables. The
// caller owns tp: Shutdown does not shut it down.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(o *options) { o.tracerProvider = tp })
}

// WithMeterProvider makes Telemetry use mp instead of building one. The caller owns mp, and
// MetricsHandler then answers 404 (the Prometheus exporter is part of the built-in provider).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.meterProvider = mp })
}

// WithSpanProcessor adds a span processor (a tracetest.SpanRecorder in tests) to the built-in
// TracerProvider, beside any exporter OTEL_TRACES_EXPORTER selects. Shutdown shuts it down.
func WithSpanProcessor(sp sdktrace.SpanProcessor) Option {
	return optionFunc(func(o *options) { o.spanProcessors = append(o.spanProcessors, sp) })
}

// WithSpanExporter adds an exporter behind a batch span processor configured from OTEL_BSP_*.
func WithSpanExporter(e sdktrace.SpanExporter) Option {
	return optionFunc(func(o *options) { o.spanExporters = append(o.spanExporters, e) })
}

// WithMetricReader adds a reader (an sdkmetric.ManualReader in tests) to the built-in MeterProvider.
func WithMetricReader(r sdkmetric.Reader) Option {
	return optionFunc(func(o *options) { o.metricReaders = append(o.metricReaders, r) })
}

// WithLogProcessor adds an OpenTelemetry log processor: log lines then also go through the otelzap
// bridge to it, as with OTEL_LOGS_EXPORTER=otlp.
func WithLogProcessor(p sdklog.Processor) Option {
	return optionFunc(func(o *options) { o.logProcessors = append(o.logProcessors, p) })
}

// WithLoggerCore tees every log entry to core as well (a zaptest/observer core in tests). The
// runtime level (LOG_LEVEL, LevelHandler) applies to it too.
func WithLoggerCore(core zapcore.Core) Option {
	return optionFunc(func(o *options) { o.cores = append(o.cores, core) })
}

// WithPropagator replaces the default W3C trace context + baggage propagator.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return optionFunc(func(o *options) { o.propagator = p })
}

// WithRouteCacheSize changes DefaultRouteCacheSize.
func WithRouteCacheSize(n int) Option {
	return optionFunc(func(o *options) { o.routeCacheSize = n })
}

// WithoutRuntimeMetrics turns off the Go runtime and process metrics (on by default).
func WithoutRuntimeMetrics() Option {
	return optionFunc(func(o *options) { o.noRuntime = true })
}
