// Package telemetry gives a Chassis service its logs, traces and metrics, the OpenTelemetry way.
// It is the only Chassis package that imports the OpenTelemetry SDK and zap.
//
// Start with New: it builds a zap logger (JSON on stdout, level changeable at runtime through
// LevelHandler), a TracerProvider and a MeterProvider configured from the standard OTEL_*
// variables (OTLP over http/protobuf or gRPC, samplers, resource attributes, OTEL_SDK_DISABLED),
// a Prometheus exposition for the admin /metrics (MetricsHandler, with exemplars), and optional
// OTLP log export through the otelzap bridge. Then wrap the public mux with Handler and outbound
// transports with Transport; both follow the HTTP semantic conventions
// (http.server.request.duration per route template, http.client.request.duration) at a fraction of
// otelhttp's cost, because attribute sets are computed once per route and cached. For returns a
// request's logger with trace_id and span_id. Settings.LogBuffer buffers the lines to standard
// output (a copy per line instead of a write(2); errors and Shutdown flush it; lines are never
// dropped). Shutdown flushes everything within its context.
//
// Nothing here sets OpenTelemetry globals; call SetGlobal to opt in. The names the rest of Chassis
// emits (breaker, retry, discovery metrics and span events) are constants in the semconv
// sub-package, which imports nothing, and are documented in docs/telemetry.md. For tests, the
// telemetrytest sub-package records spans, metrics and logs in memory.
package telemetry
