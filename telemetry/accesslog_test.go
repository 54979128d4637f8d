package telemetry

import (
	"bytes"
	"net/http"
	"net/url"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

type fixedClock time.Time

func (c fixedClock) Now() time.Time                         { return time.Time(c) }
func (c fixedClock) NewTicker(d time.Duration) *time.Ticker { return time.NewTicker(d) }

// accessLines logs one access line through zap and through accessWriter and returns both (the
// second empty when accessWriter declined it).
func accessLines(t testing.TB, service string, now time.Time, lvl zapcore.Level, r *http.Request, route string, status int, d time.Duration, n int64, sc trace.SpanContext) (viaZap, fast string, ok bool) {
	t.Helper()
	var zb, fb bytes.Buffer
	level := zap.NewAtomicLevelAt(lvl)
	zl := zap.New(zapcore.NewCore(newEncoder("json"), zapcore.AddSync(&zb), level), zap.WithClock(fixedClock(now))).
		With(zap.String("service", service))
	(&Telemetry{accessLog: zl, sample: 1}).logAccess(r, route, status, now, d, n, sc)
	aw := newAccessWriter(zapcore.AddSync(&fb), level, service)
	if aw == nil {
		return zb.String(), "", false
	}
	ok = (&Telemetry{accessLog: zap.NewNop(), accessFast: aw, sample: 1}).accessFast.write(now, levelOf(status), r, route, status, d, n, sc)
	return zb.String(), fb.String(), ok
}

func levelOf(status int) zapcore.Level {
	if status >= 500 {
		return zapcore.ErrorLevel
	}
	return zapcore.InfoLevel
}

func TestAccessLineMatchesZap(t *testing.T) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:  trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}, TraceFlags: trace.FlagsSampled})
	berlin := time.FixedZone("CET", 3600)
	for _, tc := range []struct {
		name     string
		now      time.Time
		lvl      zapcore.Level
		method   string
		path     string
		status   int
		d        time.Duration
		sc       trace.SpanContext
		declined bool // a string needs escaping: zap writes the line
	}{
		{name: "ok", now: time.Date(2026, 12, 3, 15, 20, 10, 124159882, time.UTC), method: "GET", path: "/hello/world", status: 200, d: 123456 * time.Nanosecond, sc: sc},
		{name: "trailing zeros", now: time.Date(2026, 12, 3, 15, 20, 10, 120000000, time.UTC), method: "POST", path: "/a", status: 201, d: time.Second},
		{name: "whole second", now: time.Date(2026, 12, 3, 15, 20, 10, 0, time.UTC), method: "GET", path: "/", status: 204},
		{name: "zone", now: time.Date(2026, 3, 29, 1, 59, 59, 999999999, berlin), method: "GET", path: "/", status: 200, d: 3 * time.Millisecond},
		{name: "5xx", now: time.Date(2026, 12, 3, 0, 0, 0, 1, time.UTC), method: "GET", path: "/x", status: 503, d: 90 * time.Second, sc: sc},
		{name: "below level", lvl: zapcore.WarnLevel, now: time.Date(2026, 12, 3, 0, 0, 0, 1, time.UTC), method: "GET", path: "/x", status: 200},
		{name: "quote", now: time.Date(2026, 12, 3, 0, 0, 0, 1, time.UTC), method: "GET", path: `/"x`, status: 404, declined: true},
		{name: "non-ASCII", now: time.Date(2026, 12, 3, 0, 0, 0, 1, time.UTC), method: "GET", path: "/ä", status: 404, declined: true},
		{name: "control", now: time.Date(2026, 12, 3, 0, 0, 0, 1, time.UTC), method: "GET", path: "/\x01", status: 404, declined: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &http.Request{Method: tc.method, URL: &url.URL{Path: tc.path}, RemoteAddr: "127.0.0.1:5555"}
			z, f, ok := accessLines(t, "hello", tc.now, tc.lvl, r, "/hello/{name}", tc.status, tc.d, 28, tc.sc)
			if ok == tc.declined {
				t.Fatalf("accessWriter took the line: %v, want %v", ok, !tc.declined)
			}
			if tc.declined {
				return
			}
			if z != f {
				t.Errorf("lines differ:\nzap:  %q\nfast: %q", z, f)
			}
			if tc.lvl == zapcore.WarnLevel && f != "" {
				t.Errorf("a line below the level was written: %q", f)
			}
		})
	}
	if newAccessWriter(zapcore.AddSync(&bytes.Buffer{}), zap.NewAtomicLevel(), `say "hi"`) != nil {
		t.Error("a service name that needs escaping was accepted")
	}
}

func FuzzAccessLine(f *testing.F) {
	f.Add("GET", "/hello/world", "127.0.0.1:1", "svc", 200, int64(123456), int64(28), int64(1764775210124159882), false)
	f.Add("PATCH", "/", "[::1]:80", "a-b", 503, int64(0), int64(0), int64(0), true)
	f.Fuzz(func(t *testing.T, method, path, remote, service string, status int, d, n, unixNano int64, traced bool) {
		var sc trace.SpanContext
		if traced {
			sc = trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{byte(d), 1}, SpanID: trace.SpanID{byte(n), 2}})
		}
		now := time.Unix(0, unixNano).UTC()
		r := &http.Request{Method: method, URL: &url.URL{Path: path}, RemoteAddr: remote}
		z, fast, ok := accessLines(t, service, now, zapcore.InfoLevel, r, "/r/{x}", status, time.Duration(d), n, sc)
		if ok && z != fast {
			t.Errorf("lines differ:\nzap:  %q\nfast: %q", z, fast)
		}
	})
}
