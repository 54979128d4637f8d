// Package telemetrytest records what a telemetry.Telemetry emits, in memory, for tests: spans
// (an OpenTelemetry tracetest.SpanRecorder), metrics (an sdk/metric ManualReader) and log entries
// (a zaptest/observer core), with small assertion helpers.
//
// Start with New, which returns a Telemetry wired to a Recorder and shut down at test cleanup; or
// NewRecorder plus Recorder.Options to pass the same recorders to chassis or another constructor.
// A Recorder is safe for concurrent use.
package telemetrytest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/cloudchassis/kit/telemetry"
)

// Recorder holds the in-memory span recorder, metric reader and observed logs.
type Recorder struct {
	Spans  *tracetest.SpanRecorder
	Reader *sdkmetric.ManualReader
	Logs   *observer.ObservedLogs
	core   zapcore.Core
}

// NewRecorder returns an empty Recorder. Its observer records every level; the Telemetry's runtime
// level still applies.
func NewRecorder() *Recorder {
	core, logs := observer.New(zapcore.DebugLevel)
	return &Recorder{Spans: tracetest.NewSpanRecorder(), Reader: sdkmetric.NewManualReader(), Logs: logs, core: core}
}

// Core returns the observer core that fills Logs, for telemetry.WithLoggerCore.
func (r *Recorder) Core() zapcore.Core { return r.core }

// Options returns the telemetry options that route spans, metrics and logs to r.
func (r *Recorder) Options() []telemetry.Option {
	return []telemetry.Option{
		telemetry.WithSpanProcessor(r.Spans),
		telemetry.WithMetricReader(r.Reader),
		telemetry.WithLoggerCore(r.core),
	}
}

// Env is a Settings.Lookup that sees only the given OTEL_* variables, so tests do not depend on
// the process environment. Pairs are key, value, key, value...
func Env(pairs ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(pairs); i += 2 {
		m[pairs[i]] = pairs[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// New returns a Telemetry recording into a new Recorder: every span sampled, no exporter, no
// runtime metrics, log lines to io.Discard (read them from Recorder.Logs) unless s sets LogOutput.
// s.Lookup defaults to Env() (an empty environment). The Telemetry is shut down at cleanup.
func New(tb testing.TB, s telemetry.Settings, opts ...telemetry.Option) (*telemetry.Telemetry, *Recorder) {
	tb.Helper()
	r := NewRecorder()
	if s.Lookup == nil {
		s.Lookup = Env("OTEL_METRICS_EXPORTER", "none", "OTEL_TRACES_SAMPLER", "always_on")
	}
	if s.LogOutput == nil {
		s.LogOutput = io.Discard
	}
	all := append(r.Options(), telemetry.WithoutRuntimeMetrics())
	tel, err := telemetry.New(context.Background(), s, append(all, opts...)...)
	if err != nil {
		tb.Fatalf("telemetrytest: %v", err)
	}
	tb.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel, r
}

// Ended returns the ended spans named name, oldest first.
func (r *Recorder) Ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range r.Spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// AssertSpan fails the test unless exactly one ended span is named name and carries every attribute
// in want; it returns the span (nil after a failure).
func (r *Recorder) AssertSpan(tb testing.TB, name string, want ...attribute.KeyValue) sdktrace.ReadOnlySpan {
	tb.Helper()
	spans := r.Ended(name)
	if len(spans) != 1 {
		tb.Errorf("span %q: ended %d times, want 1 (ended spans: %s)", name, len(spans), r.spanNames())
		return nil
	}
	s := spans[0]
	have := attribute.NewSet(s.Attributes()...)
	for _, kv := range want {
		if v, ok := have.Value(kv.Key); !ok || v != kv.Value {
			tb.Errorf("span %q: attribute %s = %v, want %v", name, kv.Key, v.Emit(), kv.Value.Emit())
		}
	}
	return s
}

func (r *Recorder) spanNames() string {
	var names []string
	for _, s := range r.Spans.Ended() {
		names = append(names, fmt.Sprintf("%q", s.Name()))
	}
	return "[" + strings.Join(names, " ") + "]"
}

// Collect reads the current metrics.
func (r *Recorder) Collect(tb testing.TB) metricdata.ResourceMetrics {
	tb.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Reader.Collect(context.Background(), &rm); err != nil {
		tb.Fatalf("telemetrytest: collect: %v", err)
	}
	return rm
}

// matches reports whether set holds every attribute of want.
func matches(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

func (r *Recorder) find(tb testing.TB, name string) (metricdata.Metrics, bool) {
	tb.Helper()
	for _, sm := range r.Collect(tb).ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// CounterValue returns the sum of the data points of the counter, up-down counter or gauge named
// name whose attributes include want (0 when there is none).
func (r *Recorder) CounterValue(tb testing.TB, name string, want ...attribute.KeyValue) float64 {
	tb.Helper()
	m, ok := r.find(tb, name)
	if !ok {
		return 0
	}
	var total float64
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				total += float64(p.Value)
			}
		}
	case metricdata.Sum[float64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				total += p.Value
			}
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				total += float64(p.Value)
			}
		}
	case metricdata.Gauge[float64]:
		for _, p := range d.DataPoints {
			if matches(p.Attributes, want) {
				total += p.Value
			}
		}
	default:
		tb.Errorf("metric %q is a %T, not a counter or gauge", name, m.Data)
	}
	return total
}

// HistogramCount returns the number of measurements of the histogram named name over the data
// points whose attributes include want.
func (r *Recorder) HistogramCount(tb testing.TB, name string, want ...attribute.KeyValue) uint64 {
	tb.Helper()
	points := r.HistogramPoints(tb, name, want...)
	var n uint64
	for _, p := range points {
		n += p.Count
	}
	return n
}

// HistogramPoints returns the data points of the float64 histogram named name whose attributes
// include want.
func (r *Recorder) HistogramPoints(tb testing.TB, name string, want ...attribute.KeyValue) []metricdata.HistogramDataPoint[float64] {
	tb.Helper()
	m, ok := r.find(tb, name)
	if !ok {
		return nil
	}
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		tb.Errorf("metric %q is a %T, not a float64 histogram", name, m.Data)
		return nil
	}
	var out []metricdata.HistogramDataPoint[float64]
	for _, p := range h.DataPoints {
		if matches(p.Attributes, want) {
			out = append(out, p)
		}
	}
	return out
}

// LogsWithTraceID returns the observed log entries whose trace_id field is id.
func (r *Recorder) LogsWithTraceID(id trace.TraceID) []observer.LoggedEntry {
	hex := id.String()
	return r.Logs.Filter(func(e observer.LoggedEntry) bool {
		return e.ContextMap()[telemetry.FieldTraceID] == hex
	}).All()
}
