package telemetry

import (
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/bridges/otelzap"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Log field keys shared by every line that belongs to a span.
const (
	FieldTraceID = "trace_id"
	FieldSpanID  = "span_id"
)

func logSettings(s Settings) (zapcore.Level, string, error) {
	lvl := zapcore.InfoLevel
	var errs []error
	if s.LogLevel != "" {
		switch strings.ToLower(s.LogLevel) {
		case "debug":
			lvl = zapcore.DebugLevel
		case "info":
			lvl = zapcore.InfoLevel
		case "warn", "warning":
			lvl = zapcore.WarnLevel
		case "error":
			lvl = zapcore.ErrorLevel
		default:
			errs = append(errs, &EnvError{Key: "LOG_LEVEL", Value: s.LogLevel, Reason: "one of debug, info, warn, error"})
		}
	}
	format := DefaultLogFormat
	if s.LogFormat != "" {
		format = strings.ToLower(s.LogFormat)
		if format != "json" && format != "console" {
			errs = append(errs, &EnvError{Key: "LOG_FORMAT", Value: s.LogFormat, Reason: "one of json, console"})
		}
	}
	return lvl, format, errors.Join(errs...)
}

func (t *Telemetry) buildLogging(ctx context.Context, s Settings, env envConfig, o *options, lvl zapcore.Level, format string) error {
	t.level = zap.NewAtomicLevelAt(lvl)
	out := s.LogOutput
	if out == nil {
		out = os.Stdout
	}
	var ws zapcore.WriteSyncer
	if f, ok := out.(*os.File); ok && s.LogBuffer > 0 {
		t.sink = newLogSink(f, s.LogBuffer, LogFlushInterval)
		ws = t.sink
	} else {
		ws = zapcore.Lock(zapcore.AddSync(out))
	}
	enc := newEncoder(format)
	// The level lives in one place (levelCore) so that LevelHandler changes every tee'd core.
	// The access log and the other loggers share the output core, but only the other loggers flush
	// the buffer on errors (see flushCore).
	outCore := zapcore.NewCore(enc, ws, zapcore.DebugLevel)
	cores := append([]zapcore.Core{outCore}, o.cores...)

	processors := o.logProcessors
	if !env.disabled && contains(env.logs, exporterOTLP) {
		exp, err := newLogExporter(ctx, env.logsOTLP)
		if err != nil {
			return err
		}
		processors = append(processors, sdklog.NewBatchProcessor(exp,
			sdklog.WithExportInterval(env.blrpDelay),
			sdklog.WithExportTimeout(env.blrpTimeout),
			sdklog.WithMaxQueueSize(env.blrpQueue),
			sdklog.WithExportMaxBatchSize(env.blrpBatch)))
	}
	if len(processors) > 0 {
		valueLength := -1 // unlimited
		if env.logValueLength > 0 {
			valueLength = env.logValueLength
		}
		popts := []sdklog.LoggerProviderOption{
			sdklog.WithResource(t.resource),
			sdklog.WithAttributeCountLimit(env.logAttrCount),
			sdklog.WithAttributeValueLengthLimit(valueLength),
		}
		for _, p := range processors {
			popts = append(popts, sdklog.WithProcessor(p))
		}
		t.sdkLP = sdklog.NewLoggerProvider(popts...)
		t.otlpLogs = true
		cores = append(cores, otelzap.NewCore(semconv.ScopeTelemetry, otelzap.WithLoggerProvider(t.sdkLP)))
	}
	core := &levelCore{Core: zapcore.NewTee(cores...), level: t.level}
	service := s.ServiceName
	if v, ok := t.resource.Set().Value("service.name"); ok {
		service = v.AsString()
	}
	base := zap.New(core, zap.ErrorOutput(ws)).With(zap.String("service", service))
	t.accessLog = base
	if format == "json" && len(cores) == 1 {
		t.accessFast = newAccessWriter(ws, t.level, service) // nil when service needs escaping
	}
	if t.sink != nil {
		cores[0] = &flushCore{Core: outCore, sink: t.sink}
		core = &levelCore{Core: zapcore.NewTee(cores...), level: t.level}
		base = zap.New(core, zap.ErrorOutput(ws)).With(zap.String("service", service))
	}
	t.logger = base.WithOptions(zap.AddCaller())
	t.slog = slog.New(newSlogHandler(base.Core()))
	return nil
}

// newEncoder returns the encoder of LOG_FORMAT: "json" (production keys, "ts" in RFC 3339 with
// nanoseconds, durations in seconds) or "console".
func newEncoder(format string) zapcore.Encoder {
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	encCfg.EncodeDuration = zapcore.SecondsDurationEncoder
	if format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		encCfg.EncodeDuration = zapcore.StringDurationEncoder
		return zapcore.NewConsoleEncoder(encCfg)
	}
	return zapcore.NewJSONEncoder(encCfg)
}

// levelCore applies the runtime level to a tee of cores.
type levelCore struct {
	zapcore.Core
	level zap.AtomicLevel
}

func (c *levelCore) Enabled(l zapcore.Level) bool { return c.level.Enabled(l) && c.Core.Enabled(l) }

func (c *levelCore) With(fields []zapcore.Field) zapcore.Core {
	return &levelCore{Core: c.Core.With(fields), level: c.level}
}

func (c *levelCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if !c.level.Enabled(e.Level) {
		return ce
	}
	return c.Core.Check(e, ce)
}

// For returns the logger for the work ctx belongs to: Logger with trace_id and span_id of the span
// in ctx. Without a valid span in ctx it returns Logger itself (no allocation). Inside Handler the
// derived logger is built once per request and reused by later calls.
func (t *Telemetry) For(ctx context.Context) *zap.Logger {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return t.logger
	}
	st, _ := ctx.Value(stateKey{}).(*requestState)
	if st != nil && st.spanID == sc.SpanID() {
		if l := st.logger.Load(); l != nil {
			return l
		}
	}
	l := t.logger.With(t.spanFields(sc)...)
	if st != nil && st.spanID == sc.SpanID() {
		st.logger.Store(l)
	}
	return l
}

// spanFields are the fields that tie a log line to its span. With OTLP log export, a field carrying
// the span context (skipped by the JSON encoder) lets the otelzap bridge set the record's trace
// context.
func (t *Telemetry) spanFields(sc trace.SpanContext) []zap.Field {
	ids := spanIDs(sc)
	fields := []zap.Field{zap.String(FieldTraceID, ids[:32]), zap.String(FieldSpanID, ids[32:])}
	if t.otlpLogs {
		fields = append(fields, zap.Field{Key: "", Type: zapcore.SkipType,
			Interface: trace.ContextWithSpanContext(context.Background(), sc)})
	}
	return fields
}

// spanIDs hex-encodes trace and span id into one 48-byte string: slicing it gives both without a
// second allocation.
func spanIDs(sc trace.SpanContext) string {
	var buf [48]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	hex.Encode(buf[:32], tid[:])
	hex.Encode(buf[32:], sid[:])
	return string(buf[:])
}

// slogHandler sends slog records through a zap core, so both APIs share level, output and fields.
type slogHandler struct {
	core   zapcore.Core
	groups []string // open groups not yet materialised as zap namespaces
}

func newSlogHandler(core zapcore.Core) *slogHandler { return &slogHandler{core: core} }

func slogToZap(l slog.Level) zapcore.Level {
	switch {
	case l >= slog.LevelError:
		return zapcore.ErrorLevel
	case l >= slog.LevelWarn:
		return zapcore.WarnLevel
	case l >= slog.LevelInfo:
		return zapcore.InfoLevel
	default:
		return zapcore.DebugLevel
	}
}

func (h *slogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.core.Enabled(slogToZap(l))
}

func (h *slogHandler) Handle(ctx context.Context, r slog.Record) error {
	ent := zapcore.Entry{Level: slogToZap(r.Level), Time: r.Time, Message: r.Message}
	if r.Time.IsZero() {
		ent.Time = time.Now()
	}
	ce := h.core.Check(ent, nil)
	if ce == nil {
		return nil
	}
	fields := make([]zap.Field, 0, r.NumAttrs()+2+len(h.groups))
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		ids := spanIDs(sc)
		fields = append(fields, zap.String(FieldTraceID, ids[:32]), zap.String(FieldSpanID, ids[32:]))
	}
	for _, g := range h.groups {
		fields = append(fields, zap.Namespace(g))
	}
	r.Attrs(func(a slog.Attr) bool {
		fields = appendAttr(fields, a)
		return true
	})
	ce.Write(fields...)
	return nil
}

func (h *slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	fields := make([]zap.Field, 0, len(attrs)+len(h.groups))
	for _, g := range h.groups {
		fields = append(fields, zap.Namespace(g))
	}
	for _, a := range attrs {
		fields = appendAttr(fields, a)
	}
	return &slogHandler{core: h.core.With(fields)}
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	groups := append(h.groups[:len(h.groups):len(h.groups)], name)
	return &slogHandler{core: h.core, groups: groups}
}

func appendAttr(fields []zap.Field, a slog.Attr) []zap.Field {
	v := a.Value.Resolve()
	if a.Key == "" && v.Kind() != slog.KindGroup {
		return fields // slog's rule: attributes with empty keys are dropped
	}
	switch v.Kind() {
	case slog.KindString:
		return append(fields, zap.String(a.Key, v.String()))
	case slog.KindInt64:
		return append(fields, zap.Int64(a.Key, v.Int64()))
	case slog.KindUint64:
		return append(fields, zap.Uint64(a.Key, v.Uint64()))
	case slog.KindFloat64:
		return append(fields, zap.Float64(a.Key, v.Float64()))
	case slog.KindBool:
		return append(fields, zap.Bool(a.Key, v.Bool()))
	case slog.KindDuration:
		return append(fields, zap.Duration(a.Key, v.Duration()))
	case slog.KindTime:
		return append(fields, zap.Time(a.Key, v.Time()))
	case slog.KindGroup:
		attrs := v.Group()
		if len(attrs) == 0 {
			return fields
		}
		if a.Key == "" { // inline group
			for _, ga := range attrs {
				fields = appendAttr(fields, ga)
			}
			return fields
		}
		return append(fields, zap.Object(a.Key, groupMarshaler(attrs)))
	default:
		if err, ok := v.Any().(error); ok {
			return append(fields, zap.NamedError(a.Key, err))
		}
		return append(fields, zap.Any(a.Key, v.Any()))
	}
}

type groupMarshaler []slog.Attr

func (g groupMarshaler) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for _, f := range appendAttrs(nil, g) {
		f.AddTo(enc)
	}
	return nil
}

func appendAttrs(fields []zap.Field, attrs []slog.Attr) []zap.Field {
	for _, a := range attrs {
		fields = appendAttr(fields, a)
	}
	return fields
}
