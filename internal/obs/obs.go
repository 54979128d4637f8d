// Package obs holds what a library component reports through, a meter provider and a logger, with
// the defaults every package uses: a no-op provider and a discarding logger. No package reads the
// OpenTelemetry globals. A package embeds Sinks in its options and sets it from its own
// WithMeterProvider and WithLogger options.
package obs

import (
	"log/slog"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Sinks is where a component's metrics and logs go.
type Sinks struct {
	Meters metric.MeterProvider
	Logger *slog.Logger
}

// Defaults returns a no-op meter provider and a logger that discards.
func Defaults() Sinks {
	return Sinks{Meters: noop.NewMeterProvider(), Logger: slog.New(slog.DiscardHandler)}
}

// SetMeterProvider sets Meters; nil keeps the current provider.
func (s *Sinks) SetMeterProvider(mp metric.MeterProvider) {
	if mp != nil {
		s.Meters = mp
	}
}

// SetLogger sets Logger; nil keeps the current logger.
func (s *Sinks) SetLogger(l *slog.Logger) {
	if l != nil {
		s.Logger = l
	}
}
