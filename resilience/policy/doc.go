// Package policy holds the state machines behind resilience's client chain, for callers that are
// not HTTP round trippers (resilience/kitendpoint adapts them to go-kit endpoints): a circuit
// Breaker, a Bulkhead and a retry Budget. They record no telemetry and make no errors of their own;
// resilience wraps them with both. All types are safe for concurrent use, and a nil *Breaker or
// *Bulkhead lets everything through.
package policy
