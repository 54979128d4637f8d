package telemetry

// SharesOTLPMetrics reports whether t exports OTLP metrics from the Prometheus reader's aggregation.
func SharesOTLPMetrics(t *Telemetry) bool { return t.sharedOTLP != nil }
