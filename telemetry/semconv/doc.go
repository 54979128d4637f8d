// Package semconv holds the names (metric names, units, attribute keys and values, span-event names)
// that every Chassis package emits, so that resilience, discovery and the server guards all agree on
// them without importing the OpenTelemetry SDK.
//
// It imports nothing but the standard library: leaf packages use these constants with the OTel API
// packages (go.opentelemetry.io/otel/metric and /trace) and receive their providers from the
// telemetry package through chassis. HTTP names follow the OpenTelemetry semantic conventions
// (HTTPServerRequestDuration and friends); Chassis' own names live under the "chassis." namespace.
//
// The scheme, with units, attributes and their allowed values, is documented in docs/telemetry.md.
// Start with the Metric* constants and the Attr* keys that go with them.
//
// The package is named like OpenTelemetry's semconv packages on purpose (it plays the same role);
// import it as chassisconv when a file also imports go.opentelemetry.io/otel/semconv/....
package semconv
