package telemetry

import (
	"bytes"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// rpcLines logs one RPC access line through zap and through accessWriter and returns both (the
// second empty when accessWriter declined it).
func rpcLines(t testing.TB, now time.Time, serverError bool, method, code string, d time.Duration, remote, id string, sc trace.SpanContext) (viaZap, fast string, ok bool) {
	t.Helper()
	var zb, fb bytes.Buffer
	level := zap.NewAtomicLevelAt(zapcore.InfoLevel)
	zl := zap.New(zapcore.NewCore(newEncoder("json"), zapcore.AddSync(&zb), level), zap.WithClock(fixedClock(now))).
		With(zap.String("service", "pricing"))
	(&Telemetry{accessLog: zl}).logRPC(now, serverError, method, code, d, remote, id, sc)
	aw := newAccessWriter(zapcore.AddSync(&fb), level, "pricing")
	lvl := zapcore.InfoLevel
	if serverError {
		lvl = zapcore.ErrorLevel
	}
	ok = aw.writeRPC(now, lvl, method, code, d, remote, id, sc)
	return zb.String(), fb.String(), ok
}

// TestRPCAccessLineMatchesZap: the gRPC access line written by accessWriter is byte for byte the
// line zap writes for the same call, and a string that needs escaping goes to zap.
func TestRPCAccessLineMatchesZap(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled})
	now := time.Date(2026, 12, 3, 19, 20, 10, 124159882, time.UTC)
	for _, tc := range []struct {
		name        string
		serverError bool
		method, id  string
		sc          trace.SpanContext
		declined    bool
	}{
		{name: "ok", method: "/chassis.shop.pricing.v1.Pricing/GetPrice", id: "4bf92f3577b34da6", sc: sc},
		{name: "server error", serverError: true, method: "/p.S/M", id: "x"},
		{name: "no request id", method: "/p.S/M"},
		{name: "quote in the request id", method: "/p.S/M", id: `a"b`, declined: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			z, f, ok := rpcLines(t, now, tc.serverError, tc.method, "OK", 1500*time.Microsecond, "127.0.0.1:5555", tc.id, tc.sc)
			if ok == tc.declined {
				t.Fatalf("accessWriter took the line: %v, want %v", ok, !tc.declined)
			}
			if !tc.declined && z != f {
				t.Errorf("lines differ:\nzap:  %q\nfast: %q", z, f)
			}
		})
	}
}

func FuzzRPCAccessLine(f *testing.F) {
	f.Add("/p.S/M", "OK", "127.0.0.1:1", "id-1", int64(123456), int64(1764775210124159882), false, true)
	f.Add("/a/b", "UNAVAILABLE", "[::1]:80", "", int64(0), int64(0), true, false)
	f.Fuzz(func(t *testing.T, method, code, remote, id string, d, unixNano int64, serverError, traced bool) {
		var sc trace.SpanContext
		if traced {
			sc = trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{byte(d), 1}, SpanID: trace.SpanID{byte(unixNano), 2}})
		}
		z, fast, ok := rpcLines(t, time.Unix(0, unixNano).UTC(), serverError, method, code, time.Duration(d), remote, id, sc)
		if ok && z != fast {
			t.Errorf("lines differ:\nzap:  %q\nfast: %q", z, fast)
		}
	})
}
