package telemetry

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// accessWriter writes access-log lines straight to the log output, byte for byte the line zap's
// JSON encoder writes for the same entry (TestAccessLineMatchesZap compares them, and a fuzz test
// searches for a difference). It exists because the access log is the one line a service writes
// per request: through zap it costs a []zap.Field of ~600 bytes, a CheckedEntry, an encoder clone
// and a time format per request, several times what appending the same bytes costs here
// (BENCHMARKS.md, issue 15). It is used only where it can be exact: JSON format, the output core
// alone (no OTLP log export, no WithCore cores), and strings that need no JSON escaping; any
// other line goes through zap.
type accessWriter struct {
	out   zapcore.WriteSyncer
	level zap.AtomicLevel
	// service is `,"service":"name"`, encoded once.
	service string
	ts      tsCache
	bufs    sync.Pool
}

func newAccessWriter(out zapcore.WriteSyncer, level zap.AtomicLevel, service string) *accessWriter {
	if !plainJSON(service) {
		return nil // escaping is zap's job
	}
	return &accessWriter{
		out: out, level: level,
		service: `,"service":"` + service + `"`,
		bufs:    sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }},
	}
}

// write writes the line and reports true, or reports false, having written nothing, when a string
// needs escaping (the caller then logs the line through zap).
func (a *accessWriter) write(now time.Time, lvl zapcore.Level, r *http.Request, route string, status int, d time.Duration, bytes int64, sc trace.SpanContext) bool {
	if !plainJSON(r.Method) || !plainJSON(route) || !plainJSON(r.URL.Path) || !plainJSON(r.RemoteAddr) {
		return false
	}
	if !a.level.Enabled(lvl) {
		return true
	}
	bp, b := a.open(now, lvl, "request")
	b = appendStr(b, "method", r.Method)
	b = appendStr(b, "route", route)
	b = appendStr(b, "path", r.URL.Path)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = appendDuration(b, d)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, bytes, 10)
	b = appendStr(b, "remote", r.RemoteAddr)
	a.close(bp, b, sc)
	return true
}

// writeRPC is write for a gRPC call's line (LogRPC).
func (a *accessWriter) writeRPC(now time.Time, lvl zapcore.Level, method, code string, d time.Duration, remote, requestID string, sc trace.SpanContext) bool {
	if !plainJSON(method) || !plainJSON(code) || !plainJSON(remote) || !plainJSON(requestID) {
		return false
	}
	if !a.level.Enabled(lvl) {
		return true
	}
	bp, b := a.open(now, lvl, "rpc")
	b = appendStr(b, "method", method)
	b = appendStr(b, "code", code)
	b = appendDuration(b, d)
	b = appendStr(b, "remote", remote)
	b = appendStr(b, "request_id", requestID)
	a.close(bp, b, sc)
	return true
}

// open starts a line in a pooled buffer: level, time, message and service.
func (a *accessWriter) open(now time.Time, lvl zapcore.Level, msg string) (*[]byte, []byte) {
	bp := a.bufs.Get().(*[]byte)
	b := append((*bp)[:0], `{"level":"`...)
	b = append(b, lvl.String()...)
	b = append(b, `","ts":"`...)
	b = a.ts.append(b, now)
	b = append(b, `","msg":"`...)
	b = append(b, msg...)
	b = append(b, '"')
	return bp, append(b, a.service...)
}

// close ends the line with the span's ids, writes it and returns the buffer to the pool.
func (a *accessWriter) close(bp *[]byte, b []byte, sc trace.SpanContext) {
	if sc.IsValid() {
		tid, sid := sc.TraceID(), sc.SpanID()
		b = append(b, `,"`+FieldTraceID+`":"`...)
		b = hex.AppendEncode(b, tid[:])
		b = append(b, `","`+FieldSpanID+`":"`...)
		b = hex.AppendEncode(b, sid[:])
		b = append(b, '"')
	}
	b = append(b, "}\n"...)
	_, _ = a.out.Write(b) // as zap: a failing output has nowhere else to report to
	if cap(b) <= 4<<10 {
		*bp = b[:0]
		a.bufs.Put(bp)
	}
}

// appendDuration appends a duration as zap's JSON encoder does here: seconds as a float.
func appendDuration(b []byte, d time.Duration) []byte {
	b = append(b, `,"duration":`...)
	return strconv.AppendFloat(b, float64(d)/float64(time.Second), 'f', -1, 64)
}

func appendStr(b []byte, key, val string) []byte {
	b = append(b, `,"`...)
	b = append(b, key...)
	b = append(b, `":"`...)
	b = append(b, val...)
	return append(b, '"')
}

// plainJSON reports whether s is printable ASCII with no quote or backslash: JSON and zap write
// such a string as it is.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// tsCache formats times as time.RFC3339Nano (zap's RFC3339NanoTimeEncoder), formatting the date,
// the time of day and the zone once per second: within one Unix second only the fraction changes
// (zone offsets change on whole seconds).
type tsCache struct {
	cur atomic.Pointer[tsSecond]
}

type tsSecond struct {
	unix int64
	loc  *time.Location
	head []byte // "2006-01-02T15:04:05"
	zone []byte // "Z" or "-07:00"
}

func (c *tsCache) append(b []byte, t time.Time) []byte {
	sec, loc := t.Unix(), t.Location()
	s := c.cur.Load()
	if s == nil || s.unix != sec || s.loc != loc {
		s = &tsSecond{unix: sec, loc: loc, head: t.AppendFormat(nil, "2006-01-02T15:04:05"), zone: t.AppendFormat(nil, "Z07:00")}
		c.cur.Store(s)
	}
	b = append(b, s.head...)
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, s.zone...)
}
