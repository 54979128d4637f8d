package obs

import (
	"log/slog"
	"testing"

	"go.opentelemetry.io/otel/metric/noop"
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
