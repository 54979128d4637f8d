package telemetry

import (
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// LogRPC writes the access-log line of one RPC: message "rpc" with method (the full method name),
// code (the status code's name), duration (seconds), remote, request_id and the span's trace and
// span ids, at Error when serverError, else at Info. It goes to the HTTP access log's output, and
// where that can be exact through the same appender instead of zap (see accessWriter): a zap or
// slog line per call costs more than the rest of a small call's telemetry. Sampling is the
// caller's (package grpcx samples successful calls at ACCESS_LOG_SAMPLE).
func (t *Telemetry) LogRPC(serverError bool, method, code string, d time.Duration, remote, requestID string, sc trace.SpanContext) {
	t.logRPC(time.Now(), serverError, method, code, d, remote, requestID, sc)
}

// logRPC is LogRPC at a given time (the zap path reads zap's clock).
func (t *Telemetry) logRPC(now time.Time, serverError bool, method, code string, d time.Duration, remote, requestID string, sc trace.SpanContext) {
	lvl := zap.InfoLevel
	if serverError {
		lvl = zap.ErrorLevel
	}
	if t.accessFast != nil && t.accessFast.writeRPC(now, lvl, method, code, d, remote, requestID, sc) {
		return
	}
	ce := t.accessLog.Check(lvl, "rpc")
	if ce == nil {
		return
	}
	fields := make([]zap.Field, 0, 7)
	fields = append(fields,
		zap.String("method", method),
		zap.String("code", code),
		zap.Duration("duration", d),
		zap.String("remote", remote),
		zap.String("request_id", requestID))
	if sc.IsValid() {
		ids := spanIDs(sc)
		fields = append(fields, zap.String(FieldTraceID, ids[:32]), zap.String(FieldSpanID, ids[32:]))
	}
	ce.Write(fields...)
}
