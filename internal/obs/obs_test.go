package obs

import (
	"context"
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/cloudchassis/kit/internal/obs/obstest"
)

func TestNilKeepsDefaults(t *testing.T) {
	s := Defaults()
	s.SetMeterProvider(nil)
	s.SetLogger(nil)
	if _, ok := s.Meters.(noop.MeterProvider); !ok || s.Logger == nil {
		t.Fatalf("%T %v", s.Meters, s.Logger)
	}
	l := slog.Default()
	s.SetLogger(l)
	if s.Logger != l {
		t.Fatal("logger not set")
	}
}

func TestInstrumentsCollectErrors(t *testing.T) {
	in := NewInstruments(noop.NewMeterProvider(), "x")
	in.Counter("a", "1", "")
	if in.Err() != nil {
		t.Fatal(in.Err())
	}
	in = NewInstruments(obstest.Refusing{}, "x")
	in.Counter("a", "1", "")
	in.Histogram("b", "s", "")
	if reg := in.Register(func(context.Context, metric.Observer) error { return nil }); reg != nil {
		t.Fatal("registered after a failed instrument")
	}
	if err := in.Err(); err == nil || len(err.(interface{ Unwrap() []error }).Unwrap()) != 2 {
		t.Fatalf("Err = %v", err)
	}
}
