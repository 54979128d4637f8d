package telemetry

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelruntime "go.opentelemetry.io/contrib/instrumentation/runtime"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Telemetry owns a service's logger, tracer, meter and logger providers and its HTTP
// instrumentation. Build it with New; every method is safe for concurrent use. Shutdown flushes it.
type Telemetry struct {
	logger      *zap.Logger
	accessLog   *zap.Logger // logger without caller: the caller would always be this package
	accessFast  *accessWriter
	slog        *slog.Logger
	level       zap.AtomicLevel
	tp          trace.TracerProvider
	mp          metric.MeterProvider
	propagator  propagation.TextMapPropagator
	defaultProp bool // propagator is the built-in W3C one: enables the header fast path

	sdkTP *sdktrace.TracerProvider // owned providers, nil when user-supplied or disabled
	sdkMP *sdkmetric.MeterProvider
	sdkLP *sdklog.LoggerProvider
	sink  *logSink // buffered log output, nil when unbuffered

	sharedOTLP *sharedExport // OTLP metric export from the Prometheus reader, or nil

	metrics    http.Handler // Prometheus exposition, nil without the prometheus exporter
	otlpLogs   bool         // log records also go to OpenTelemetry: loggers carry their span context
	access     bool
	sample     float64
	server     *serverInstruments
	client     *clientInstruments
	resource   *resource.Resource
	shutdownMu sync.Mutex
	shutdown   bool
	shutErr    error
}

// New builds a Telemetry from s and the OTEL_* variables s.Lookup returns. It sets no OpenTelemetry
// globals (see SetGlobal) and starts no goroutine besides the SDK's own batch processors and
// periodic readers, all stopped by Shutdown. Every bad setting is reported at once: the error joins
// one *EnvError per problem.
//
// When OTEL_SDK_DISABLED=true, tracing and metrics are no-ops (trace context from callers is still
// propagated and logged) and MetricsHandler answers 404; logging works as usual.
func New(ctx context.Context, s Settings, opts ...Option) (*Telemetry, error) {
	var o options
	for _, opt := range opts {
		opt.apply(&o)
	}
	if o.routeCacheSize <= 0 {
		o.routeCacheSize = DefaultRouteCacheSize
	}
	env, err := readEnv(s.Lookup)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	level, format, err := logSettings(s)
	if err != nil {
		errs = append(errs, err)
	}
	if s.AccessLogSuccessSample < 0 || s.AccessLogSuccessSample > 1 {
		errs = append(errs, &EnvError{Key: "ACCESS_LOG_SAMPLE", Value: fmt.Sprint(s.AccessLogSuccessSample),
			Reason: "a probability between 0 and 1"})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	t := &Telemetry{access: s.AccessLog, sample: s.AccessLogSuccessSample, propagator: o.propagator}
	if t.propagator == nil {
		t.propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
		t.defaultProp = true
	}
	res, err := newResource(ctx, s, env)
	if err != nil {
		return nil, err
	}
	t.resource = res

	// Providers are built in dependency order; on failure, the ones already built are shut down so
	// that no exporter goroutine outlives the failed New.
	fail := func(err error) (*Telemetry, error) {
		_ = t.Shutdown(context.WithoutCancel(ctx))
		return nil, err
	}
	if err := t.buildTracing(ctx, env, &o); err != nil {
		return fail(err)
	}
	if err := t.buildMetrics(ctx, env, &o); err != nil {
		return fail(err)
	}
	if err := t.buildLogging(ctx, s, env, &o, level, format); err != nil {
		return fail(err)
	}
	t.server, err = newServerInstruments(t.mp.Meter(semconv.ScopeTelemetry), o.routeCacheSize)
	if err != nil {
		return fail(fmt.Errorf("telemetry: server instruments: %w", err))
	}
	t.client, err = newClientInstruments(t.mp.Meter(semconv.ScopeTelemetry), o.routeCacheSize)
	if err != nil {
		return fail(fmt.Errorf("telemetry: client instruments: %w", err))
	}
	if !o.noRuntime && t.sdkMP != nil {
		if err := otelruntime.Start(otelruntime.WithMeterProvider(t.mp)); err != nil {
			return fail(fmt.Errorf("telemetry: runtime metrics: %w", err))
		}
		if err := startProcessMetrics(t.mp.Meter(semconv.ScopeTelemetry)); err != nil {
			return fail(fmt.Errorf("telemetry: process metrics: %w", err))
		}
	}
	return t, nil
}

func newResource(ctx context.Context, s Settings, env envConfig) (*resource.Resource, error) {
	name := s.ServiceName
	if env.serviceName != "" {
		name = env.serviceName
	}
	if name == "" {
		name = "unknown_service:" + filepath.Base(os.Args[0])
	}
	id := s.InstanceID
	if id == "" {
		id = newInstanceID()
	}
	service := []attribute.KeyValue{
		attribute.String("service.name", name),
		attribute.String("service.instance.id", id),
	}
	if s.ServiceVersion != "" {
		service = append(service, attribute.String("service.version", s.ServiceVersion))
	}
	// Later options win: detected host and process, then OTEL_RESOURCE_ATTRIBUTES, then Settings and
	// OTEL_SERVICE_NAME (folded into name above). The process command line is left out on purpose:
	// it often carries secrets.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
		resource.WithProcessExecutableName(),
		resource.WithProcessRuntimeName(),
		resource.WithProcessRuntimeVersion(),
		resource.WithAttributes(env.resource...),
		resource.WithAttributes(service...),
	)
	if err != nil && res == nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	// A partial resource (e.g. no host name in a sandbox) is still useful.
	return res, nil
}

// closeSink flushes and closes the log buffer, giving up when ctx ends (an output that does not
// take writes, such as a pipe nobody reads): the flush then finishes, and the goroutine ends, when
// the output takes the bytes, or with the process.
func (t *Telemetry) closeSink(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- t.sink.Close() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		t.sink.abandoned.Store(true) // the output is stuck: nothing may queue behind the Close
		return ctx.Err()
	}
}

// newInstanceID returns a random UUID (version 4), the form service.instance.id recommends.
func newInstanceID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (t *Telemetry) buildTracing(ctx context.Context, env envConfig, o *options) error {
	if o.tracerProvider != nil {
		t.tp = o.tracerProvider
		return nil
	}
	if env.disabled {
		t.tp = tracenoop.NewTracerProvider()
		return nil
	}
	popts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(t.resource),
		sdktrace.WithRawSpanLimits(spanLimits(env)),
	}
	processors := 0
	bspOpts := []sdktrace.BatchSpanProcessorOption{
		sdktrace.WithBatchTimeout(env.bspDelay),
		sdktrace.WithExportTimeout(env.bspTimeout),
		sdktrace.WithMaxQueueSize(env.bspQueue),
		sdktrace.WithMaxExportBatchSize(env.bspBatch),
	}
	if contains(env.traces, exporterOTLP) {
		exp, err := newSpanExporter(ctx, env.tracesOTLP)
		if err != nil {
			return err
		}
		popts = append(popts, sdktrace.WithBatcher(exp, bspOpts...))
		processors++
	}
	for _, e := range o.spanExporters {
		popts = append(popts, sdktrace.WithBatcher(e, bspOpts...))
		processors++
	}
	for _, sp := range o.spanProcessors {
		popts = append(popts, sdktrace.WithSpanProcessor(sp))
		processors++
	}
	// With nowhere to send spans, recording them would be wasted work; dropping every span still
	// creates trace and span ids, so logs stay correlated and downstream calls carry a trace id.
	sampler := newSampler(env)
	if processors == 0 {
		sampler = sdktrace.NeverSample()
	}
	popts = append(popts, sdktrace.WithSampler(sampler))
	t.sdkTP = sdktrace.NewTracerProvider(popts...)
	t.tp = t.sdkTP
	return nil
}

// spanLimits builds the limits from Lookup: sdktrace.NewSpanLimits would read the process
// environment.
func spanLimits(env envConfig) sdktrace.SpanLimits {
	valueLength := -1 // unlimited
	if env.spanValueLength > 0 {
		valueLength = env.spanValueLength
	}
	return sdktrace.SpanLimits{
		AttributeValueLengthLimit:   valueLength,
		AttributeValueDepthLimit:    sdktrace.DefaultAttributeValueDepthLimit,
		AttributeCountLimit:         env.spanAttrCount,
		EventCountLimit:             env.eventCount,
		LinkCountLimit:              env.linkCount,
		AttributePerEventCountLimit: env.eventAttrCount,
		AttributePerLinkCountLimit:  env.linkAttrCount,
	}
}

func newSampler(env envConfig) sdktrace.Sampler {
	switch env.sampler {
	case "always_on":
		return sdktrace.AlwaysSample()
	case "always_off":
		return sdktrace.NeverSample()
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(env.samplerArg)
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample())
	case "parentbased_traceidratio":
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(env.samplerArg))
	default:
		return sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
}

func (t *Telemetry) buildMetrics(ctx context.Context, env envConfig, o *options) error {
	if o.meterProvider != nil {
		t.mp = o.meterProvider
		return nil
	}
	if env.disabled {
		t.mp = metricnoop.NewMeterProvider()
		return nil
	}
	filter := exemplar.TraceBasedFilter
	switch env.exemplarFilter {
	case "always_on":
		filter = exemplar.AlwaysOnFilter
	case "always_off":
		filter = exemplar.AlwaysOffFilter
	}
	popts := []sdkmetric.Option{
		sdkmetric.WithResource(t.resource),
		sdkmetric.WithExemplarFilter(filter),
		// The SDK's own default, passed so that OTEL_GO_X_CARDINALITY_LIMIT in the process
		// environment does not override Lookup.
		sdkmetric.WithCardinalityLimit(2000),
	}
	var promReader sdkmetric.Reader
	if contains(env.metrics, exporterPrometheus) {
		// A private registry: the global prometheus.DefaultRegisterer is left alone.
		reg := prometheus.NewRegistry()
		exp, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			return fmt.Errorf("telemetry: prometheus exporter: %w", err)
		}
		promReader = exp
		popts = append(popts, sdkmetric.WithReader(exp))
		// OpenMetrics is the format that carries exemplars; Prometheus asks for it when it scrapes.
		t.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
	}
	if contains(env.metrics, exporterOTLP) {
		exp, err := newMetricExporter(ctx, env.metricsOTLP, env.temporality)
		if err != nil {
			return err
		}
		if promReader != nil && env.temporality == "cumulative" {
			// One aggregation for both exporters (see sharedExport).
			t.sharedOTLP = newSharedExport(promReader, exp, env.metricInterval, env.metricTimeout,
				func() *zap.Logger { return t.logger })
		} else {
			popts = append(popts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp,
				sdkmetric.WithInterval(env.metricInterval), sdkmetric.WithTimeout(env.metricTimeout))))
		}
	}
	for _, r := range o.metricReaders {
		popts = append(popts, sdkmetric.WithReader(r))
	}
	t.sdkMP = sdkmetric.NewMeterProvider(popts...)
	t.mp = t.sdkMP
	return nil
}

// Logger returns the service logger: JSON (or console) lines on Settings.LogOutput, with a
// "service" field, at the runtime level LevelHandler controls. Safe for concurrent use.
func (t *Telemetry) Logger() *zap.Logger { return t.logger }

// Slog returns a *slog.Logger whose records go through the same zap core as Logger, for libraries
// that log through log/slog. Records logged with a context carrying a span get trace_id/span_id.
func (t *Telemetry) Slog() *slog.Logger { return t.slog }

// TracerProvider returns the provider the instrumentation uses (a no-op one when the SDK is
// disabled). It is not registered globally unless SetGlobal is called.
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tp }

// MeterProvider returns the provider the instrumentation uses.
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.mp }

// Propagator returns the W3C trace context + baggage propagator (or the one WithPropagator set).
func (t *Telemetry) Propagator() propagation.TextMapPropagator { return t.propagator }

// Tracer is a shorthand for TracerProvider().Tracer(name), for other Chassis packages.
func (t *Telemetry) Tracer(name string) trace.Tracer { return t.tp.Tracer(name) }

// Meter is a shorthand for MeterProvider().Meter(name), for other Chassis packages.
func (t *Telemetry) Meter(name string) metric.Meter { return t.mp.Meter(name) }

// MetricsHandler serves the Prometheus exposition (OpenMetrics when asked, which carries
// exemplars) for the admin /metrics endpoint. Without the prometheus exporter (OTEL_METRICS_EXPORTER
// without "prometheus", OTEL_SDK_DISABLED, or WithMeterProvider) it answers 404.
func (t *Telemetry) MetricsHandler() http.Handler {
	if t.metrics == nil {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "metrics: the prometheus exporter is not enabled (OTEL_METRICS_EXPORTER)", http.StatusNotFound)
		})
	}
	return t.metrics
}

// LevelHandler serves the runtime log level: GET returns {"level":"info"}, PUT with
// {"level":"debug"} changes it for every logger of this Telemetry.
func (t *Telemetry) LevelHandler() http.Handler { return t.level }

// SetGlobal registers the tracer provider, meter provider and propagator as the OpenTelemetry
// globals, for third-party instrumentation that only reads them, and routes the SDK's internal
// errors (failed exports) to Logger at warn level instead of the standard library logger.
// Nothing else sets globals.
func (t *Telemetry) SetGlobal() {
	otel.SetTracerProvider(t.tp)
	otel.SetMeterProvider(t.mp)
	otel.SetTextMapPropagator(t.propagator)
	log := t.logger.WithOptions(zap.WithCaller(false))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("opentelemetry", zap.Error(err))
	}))
}

// Shutdown flushes and stops the providers New built (spans, metrics and log records are exported
// one last time), all three at once so one slow backend cannot eat the others' share of ctx, then
// syncs the logger. It returns when done or when ctx ends, with ctx's error joined to any export
// error. Providers passed with WithTracerProvider/WithMeterProvider are left to their owner.
// Shutdown is idempotent: later calls return the first call's result.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.shutdownMu.Lock()
	defer t.shutdownMu.Unlock()
	if t.shutdown {
		return t.shutErr
	}
	t.shutdown = true
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	run := func(what string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("telemetry: shutdown %s: %w", what, err))
				mu.Unlock()
			}
		})
	}
	if t.sdkTP != nil {
		run("traces", t.sdkTP.Shutdown)
	}
	if t.sdkMP != nil {
		run("metrics", func(ctx context.Context) error {
			var err error
			if t.sharedOTLP != nil { // its last export collects from a reader the provider closes
				err = t.sharedOTLP.shutdown(ctx)
			}
			return errors.Join(err, t.sdkMP.Shutdown(ctx))
		})
	}
	if t.sdkLP != nil {
		run("logs", t.sdkLP.Shutdown)
	}
	wg.Wait()
	// The log buffer is flushed last, after everything that could still log, and then turned off:
	// a line logged after Shutdown (chassis' "stopped") is written at once.
	sinkStuck := false
	if t.sink != nil {
		if err := t.closeSink(ctx); err != nil {
			sinkStuck = true
			errs = append(errs, fmt.Errorf("telemetry: shutdown log output: %w", err))
		}
	}
	if t.logger != nil && !sinkStuck {
		_ = t.logger.Sync() // stdout cannot be synced on most systems; that is not a failure
	}
	t.shutErr = errors.Join(errs...)
	return t.shutErr
}
