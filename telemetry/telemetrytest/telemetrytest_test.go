package telemetrytest_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/telemetry"
	"github.com/cloudchassis/kit/telemetry/telemetrytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeTB records failures so the helpers' own failure paths can be tested.
type fakeTB struct {
	testing.TB
	errors []string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Errorf(format string, a ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, a...))
}

func TestHelpers(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{ServiceName: "s"})
	m := tel.Meter("test")
	c, _ := m.Int64Counter("jobs")
	c.Add(context.Background(), 2, metric.WithAttributes(attribute.String("kind", "a")))
	c.Add(context.Background(), 3, metric.WithAttributes(attribute.String("kind", "b")))
	h, _ := m.Float64Histogram("latency")
	h.Record(context.Background(), 0.1)
	h.Record(context.Background(), 0.2)

	if v := rec.CounterValue(t, "jobs"); v != 5 {
		t.Errorf("jobs %v, want 5", v)
	}
	if v := rec.CounterValue(t, "jobs", attribute.String("kind", "b")); v != 3 {
		t.Errorf("jobs{kind=b} %v, want 3", v)
	}
	if n := rec.HistogramCount(t, "latency"); n != 2 {
		t.Errorf("latency count %d", n)
	}
	if v := rec.CounterValue(t, "absent"); v != 0 {
		t.Errorf("absent metric %v", v)
	}

	ctx, span := tel.Tracer("test").Start(context.Background(), "work")
	tel.For(ctx).Info("inside")
	tel.Logger().Info("outside")
	span.End()
	if got := rec.LogsWithTraceID(span.SpanContext().TraceID()); len(got) != 1 || got[0].Message != "inside" {
		t.Errorf("logs with trace id: %v", got)
	}

	fake := &fakeTB{TB: t}
	rec.AssertSpan(fake, "work", attribute.String("missing", "x"))
	rec.AssertSpan(fake, "nope")
	if len(fake.errors) != 2 || !strings.Contains(fake.errors[0], "missing") || !strings.Contains(fake.errors[1], `"work"`) {
		t.Errorf("AssertSpan failures: %q", fake.errors)
	}
}

// NewRecorder's options plug the in-memory recorders into any constructor that forwards
// telemetry options, such as chassis.
func Example() {
	rec := telemetrytest.NewRecorder()
	tel, err := telemetry.New(context.Background(), telemetry.Settings{
		ServiceName: "demo",
		Lookup:      telemetrytest.Env("OTEL_METRICS_EXPORTER", "none"),
		LogOutput:   io.Discard,
	}, rec.Options()...)
	if err != nil {
		panic(err)
	}
	defer tel.Shutdown(context.Background())

	ctx, span := tel.Tracer("demo").Start(context.Background(), "checkout")
	tel.For(ctx).Info("charged")
	span.End()
	fmt.Println(len(rec.Ended("checkout")), len(rec.LogsWithTraceID(span.SpanContext().TraceID())))
	// Output: 1 1
}
