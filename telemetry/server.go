package telemetry

import (
	"bufio"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Bucket boundaries (seconds) that the semantic conventions advise for HTTP request durations.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// Known HTTP methods. Anything else is recorded as "_OTHER" (span name "HTTP"), as the semantic
// conventions require, so a client cannot create series with made-up methods.
var methods = [...]string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER"}

const methodOther = uint8(len(methods) - 1)

func methodIndex(m string) uint8 {
	switch m {
	case http.MethodGet:
		return 0
	case http.MethodHead:
		return 1
	case http.MethodPost:
		return 2
	case http.MethodPut:
		return 3
	case http.MethodDelete:
		return 4
	case http.MethodConnect:
		return 5
	case http.MethodOptions:
		return 6
	case http.MethodTrace:
		return 7
	case http.MethodPatch:
		return 8
	}
	return methodOther
}

var schemes = [2]string{"http", "https"}

// protocol versions by index: 0 unknown, then HTTP/1.0, 1.1, 2, 3.
var protocols = [...]string{"", "1.0", "1.1", "2", "3"}

func protocolIndex(major, minor int) uint8 {
	switch {
	case major == 1 && minor == 0:
		return 1
	case major == 1:
		return 2
	case major == 2:
		return 3
	case major == 3:
		return 4
	}
	return 0
}

// routeKey identifies one precomputed attribute set.
type routeKey struct {
	route  string
	method uint8
	scheme uint8
	proto  uint8
	status uint16
}

// routeEntry is everything the end of a request needs, computed once per routeKey.
type routeEntry struct {
	record    []metric.RecordOption
	spanName  string
	spanAttrs []attribute.KeyValue
}

// attrCache is a bounded copy-on-write map: lookups are one atomic load and a map read with no
// lock; inserts (a few per route, at warm-up) copy the map.
type attrCache[K comparable, V any] struct {
	m     atomic.Pointer[map[K]V]
	mu    sync.Mutex
	limit int
}

func newAttrCache[K comparable, V any](limit int) *attrCache[K, V] {
	c := &attrCache[K, V]{limit: limit}
	m := map[K]V{}
	c.m.Store(&m)
	return c
}

// get returns the cached value for k, building it with build on a miss. Past the limit, values are
// built per call and not cached (cached reports false), which is correct but allocates.
func (c *attrCache[K, V]) get(k K, build func(K) V) (v V, cached bool) {
	if v, ok := (*c.m.Load())[k]; ok {
		return v, true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.m.Load()
	if v, ok := old[k]; ok {
		return v, true
	}
	v = build(k)
	if len(old) >= c.limit {
		return v, false
	}
	next := make(map[K]V, len(old)+1)
	for ok, ov := range old {
		next[ok] = ov
	}
	next[k] = v
	c.m.Store(&next)
	return v, true
}

type serverInstruments struct {
	duration metric.Float64Histogram
	// active counts in-flight requests per [method][scheme] with plain atomics; an observable
	// up-down counter reports them at collection time. Same data model as a synchronous
	// UpDownCounter, at the cost of two atomic adds per request instead of two SDK measurements.
	active     [len(methods)][2]activeCount
	activeSets [len(methods)][2]metric.ObserveOption
	cache      *attrCache[routeKey, *routeEntry]
	startOpts  []trace.SpanStartOption
}

type activeCount struct {
	n    atomic.Int64
	seen atomic.Bool // reported only once used, so unused methods create no series
}

func newServerInstruments(m metric.Meter, cacheSize int) (*serverInstruments, error) {
	si := &serverInstruments{cache: newAttrCache[routeKey, *routeEntry](cacheSize)}
	var err error
	si.duration, err = m.Float64Histogram(semconv.HTTPServerRequestDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP server requests."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		return nil, err
	}
	active, err := m.Int64ObservableUpDownCounter(semconv.HTTPServerActiveRequests,
		metric.WithUnit("{request}"),
		metric.WithDescription("Number of active HTTP server requests."))
	if err != nil {
		return nil, err
	}
	for mi, method := range methods {
		for s, scheme := range schemes {
			si.activeSets[mi][s] = metric.WithAttributeSet(attribute.NewSet(
				attribute.String(semconv.AttrHTTPRequestMethod, method),
				attribute.String(semconv.AttrURLScheme, scheme)))
		}
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for mi := range si.active {
			for s := range si.active[mi] {
				if c := &si.active[mi][s]; c.seen.Load() {
					o.ObserveInt64(active, c.n.Load(), si.activeSets[mi][s])
				}
			}
		}
		return nil
	}, active)
	if err != nil {
		return nil, err
	}
	si.startOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}
	return si, nil
}

func buildServerEntry(k routeKey) *routeEntry {
	method := methods[k.method]
	attrs := make([]attribute.KeyValue, 0, 6)
	attrs = append(attrs,
		attribute.String(semconv.AttrHTTPRequestMethod, method),
		attribute.String(semconv.AttrURLScheme, schemes[k.scheme]),
		attribute.Int(semconv.AttrHTTPResponseStatusCode, int(k.status)))
	if k.route != UnmatchedRoute {
		attrs = append(attrs, attribute.String(semconv.AttrHTTPRoute, k.route))
	}
	if p := protocols[k.proto]; p != "" {
		attrs = append(attrs, attribute.String(semconv.AttrNetworkProtocolVersion, p))
	}
	if k.status >= 500 {
		attrs = append(attrs, attribute.String(semconv.AttrErrorType, strconv.Itoa(int(k.status))))
	}
	metricAttrs := attrs
	if k.route == UnmatchedRoute {
		// Metrics always carry http.route so that dashboards can group by it; spans omit it, as the
		// conventions say, when there is no route.
		metricAttrs = append(attrs[:len(attrs):len(attrs)], attribute.String(semconv.AttrHTTPRoute, UnmatchedRoute))
	}
	e := &routeEntry{
		record: []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(metricAttrs...))},
		// The span already has method and scheme from its start.
		spanAttrs: []attribute.KeyValue{attribute.Int(semconv.AttrHTTPResponseStatusCode, int(k.status))},
		spanName:  method,
	}
	if method == "_OTHER" {
		e.spanName = "HTTP"
	}
	if k.route != UnmatchedRoute {
		e.spanName += " " + k.route
		e.spanAttrs = append(e.spanAttrs, attribute.String(semconv.AttrHTTPRoute, k.route))
	}
	if k.status >= 500 {
		e.spanAttrs = append(e.spanAttrs, attribute.String(semconv.AttrErrorType, strconv.Itoa(int(k.status))))
	}
	return e
}

// Handler instruments next as a server: it continues the caller's trace (W3C trace context and
// baggage), starts a server span named "METHOD route", records http.server.request.duration and
// http.server.active_requests per route template, and writes the access log line when enabled.
//
// The route is the path part of r.Pattern as set by the http.ServeMux that next dispatches to (it
// sets it on the same *http.Request). When a middleware between Handler and the mux replaces the
// request (r.WithContext), call SetRoute from the handler or a thin wrapper instead; requests with
// no route are recorded as UnmatchedRoute. Attribute sets are computed once per (route, method,
// status, scheme, protocol) and cached, bounded by WithRouteCacheSize.
//
// Mount it on the public mux only: health, metrics and pprof on the admin port are not traced.
func (t *Telemetry) Handler(next http.Handler) http.Handler {
	return &serverHandler{t: t, next: next, tracer: t.tp.Tracer(semconv.ScopeTelemetry)}
}

type serverHandler struct {
	t      *Telemetry
	next   http.Handler
	tracer trace.Tracer
}

type stateKey struct{}

// requestState is Handler's one allocation per request. It is at once the context layer under the
// span (so For and SetRoute find it without another context.WithValue) and the ResponseWriter
// wrapper that observes status and size.
type requestState struct {
	parent context.Context
	w      respWriter
	spanID trace.SpanID
	route  string // set by SetRoute
	logger atomic.Pointer[zap.Logger]
}

func (s *requestState) Deadline() (time.Time, bool) { return s.parent.Deadline() }
func (s *requestState) Done() <-chan struct{}       { return s.parent.Done() }
func (s *requestState) Err() error                  { return s.parent.Err() }
func (s *requestState) Value(key any) any {
	if _, ok := key.(stateKey); ok {
		return s
	}
	return s.parent.Value(key)
}

// SetRoute records the route template of the request ctx belongs to, for when Handler cannot see
// r.Pattern (a middleware between Handler and the ServeMux replaced the *http.Request) or when no
// ServeMux is used. Call it from the goroutine serving the request; outside Handler it does
// nothing. route must be a template ("/items/{id}"), never a raw path.
func SetRoute(ctx context.Context, route string) {
	if st, ok := ctx.Value(stateKey{}).(*requestState); ok {
		st.route = route
	}
}

// headerCarrier reads and writes the propagation headers without canonicalising their names on
// every call (http.Header.Get would allocate for "traceparent").
type headerCarrier http.Header

func canonical(key string) string {
	switch key {
	case "traceparent":
		return "Traceparent"
	case "tracestate":
		return "Tracestate"
	case "baggage":
		return "Baggage"
	}
	return http.CanonicalHeaderKey(key)
}

func (h headerCarrier) Get(key string) string {
	if v := h[canonical(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (h headerCarrier) Set(key, value string) { h[canonical(key)] = []string{value} }

func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, strings.ToLower(k))
	}
	return keys
}

func (h *serverHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	t, si := h.t, h.t.server
	ctx := r.Context()
	// Fast path: with the default propagator and neither header present, Extract would find nothing.
	if !t.defaultProp || r.Header["Traceparent"] != nil || r.Header["Baggage"] != nil {
		ctx = t.propagator.Extract(ctx, headerCarrier(r.Header))
	}
	m := methodIndex(r.Method)
	var scheme uint8
	if r.TLS != nil {
		scheme = 1
	}
	st := &requestState{parent: ctx}
	st.w.ResponseWriter = w
	ctx, span := h.tracer.Start(st, methods[m], si.startOpts...)
	st.spanID = span.SpanContext().SpanID()
	recording := span.IsRecording()
	active := &si.active[m][scheme]
	active.n.Add(1)
	if !active.seen.Load() {
		active.seen.Store(true)
	}

	r2 := r.WithContext(ctx)
	var rw http.ResponseWriter = &st.w
	if _, ok := w.(http.Hijacker); ok {
		rw = (*h1Writer)(&st.w)
	}
	panicked := true
	defer func() {
		// Runs on panic too (the panic keeps unwinding to the recover middleware), so a crashing
		// handler is still counted as a 500 and its span ended.
		status := st.w.status
		if status == 0 {
			status = http.StatusOK
			if panicked {
				status = http.StatusInternalServerError
			}
		}
		route := routeOf(r2.Pattern)
		if route == "" {
			route = st.route
			if route == "" {
				route = UnmatchedRoute
			}
		}
		if status > 999 || status < 100 {
			status = 0 // invalid codes would break the key; 0 is visibly wrong in dashboards
		}
		k := routeKey{route: route, method: m, scheme: scheme, proto: protocolIndex(r.ProtoMajor, r.ProtoMinor), status: uint16(status)}
		e, _ := si.cache.get(k, buildServerEntry)
		end := time.Now()
		d := end.Sub(start)
		si.duration.Record(ctx, d.Seconds(), e.record...)
		active.n.Add(-1)
		if recording {
			span.SetName(e.spanName)
			h.setSpanAttributes(span, r, m, scheme, e)
			if status >= 500 {
				span.SetStatus(codes.Error, "")
			}
		}
		span.End()
		if t.access {
			t.logAccess(r, route, status, end, d, st.w.bytes, span.SpanContext())
		}
	}()
	h.next.ServeHTTP(rw, r2)
	panicked = false
}

// routeOf returns the path part of a ServeMux pattern ("GET example.com/items/{id}" gives
// "/items/{id}") without allocating.
func routeOf(pattern string) string {
	if pattern == "" {
		return ""
	}
	if i := strings.IndexByte(pattern, '/'); i >= 0 {
		return pattern[i:]
	}
	return pattern
}

// attrBuffers recycles the slice that carries a sampled span's attributes into SetAttributes. Our
// own SDK copies them (so the slice can be reused); a user-supplied TracerProvider gets a fresh one.
var attrBuffers = sync.Pool{New: func() any { b := make([]attribute.KeyValue, 0, 16); return &b }}

// setSpanAttributes sets all attributes of a sampled server span in one call: one SetAttributes
// means one slice growth in the SDK, and unsampled spans pay nothing.
func (h *serverHandler) setSpanAttributes(span trace.Span, r *http.Request, m, scheme uint8, e *routeEntry) {
	if h.t.sdkTP == nil {
		span.SetAttributes(append(appendRequestAttributes(nil, r, m, scheme), e.spanAttrs...)...)
		return
	}
	bp := attrBuffers.Get().(*[]attribute.KeyValue)
	attrs := append(appendRequestAttributes((*bp)[:0], r, m, scheme), e.spanAttrs...)
	span.SetAttributes(attrs...)
	clear(attrs) // drop references to request strings before pooling
	*bp = attrs[:0]
	attrBuffers.Put(bp)
}

// appendRequestAttributes appends the span attributes that describe the request itself.
func appendRequestAttributes(attrs []attribute.KeyValue, r *http.Request, m, scheme uint8) []attribute.KeyValue {
	attrs = append(attrs,
		attribute.String(semconv.AttrHTTPRequestMethod, methods[m]),
		attribute.String(semconv.AttrURLScheme, schemes[scheme]),
		attribute.String("url.path", r.URL.Path))
	if m == methodOther {
		attrs = append(attrs, attribute.String("http.request.method_original", r.Method))
	}
	if host, port := splitHostPort(r.Host); host != "" {
		attrs = append(attrs, attribute.String(semconv.AttrServerAddress, host))
		if port > 0 {
			attrs = append(attrs, attribute.Int(semconv.AttrServerPort, port))
		}
	}
	if host, port := splitHostPort(r.RemoteAddr); host != "" {
		attrs = append(attrs, attribute.String("network.peer.address", host), attribute.String("client.address", host))
		if port > 0 {
			attrs = append(attrs, attribute.Int("network.peer.port", port))
		}
	}
	if ua := r.Header["User-Agent"]; len(ua) > 0 {
		attrs = append(attrs, attribute.String("user_agent.original", ua[0]))
	}
	if p := protocols[protocolIndex(r.ProtoMajor, r.ProtoMinor)]; p != "" {
		attrs = append(attrs, attribute.String(semconv.AttrNetworkProtocolVersion, p))
	}
	return attrs
}

// splitHostPort splits "host:port", "[v6]:port", "host" or "[v6]" without allocating (net's
// version allocates an error for a missing port, the common case of a Host header).
func splitHostPort(hp string) (string, int) {
	if strings.HasPrefix(hp, "[") {
		end := strings.IndexByte(hp, ']')
		if end < 0 {
			return hp, 0
		}
		host, rest := hp[1:end], hp[end+1:]
		if p, ok := strings.CutPrefix(rest, ":"); ok {
			port, _ := strconv.Atoi(p)
			return host, port
		}
		return host, 0
	}
	i := strings.LastIndexByte(hp, ':')
	if i < 0 || strings.IndexByte(hp[:i], ':') >= 0 { // no port, or a bare IPv6 address
		return hp, 0
	}
	port, err := strconv.Atoi(hp[i+1:])
	if err != nil {
		return hp[:i], 0
	}
	return hp[:i], port
}

func (t *Telemetry) logAccess(r *http.Request, route string, status int, end time.Time, d time.Duration, bytes int64, sc trace.SpanContext) {
	lvl := zap.InfoLevel
	if status >= 500 {
		lvl = zap.ErrorLevel
	} else if t.sample < 1 && rand.Float64() >= t.sample {
		return
	}
	if t.accessFast != nil && t.accessFast.write(end, lvl, r, route, status, d, bytes, sc) {
		return
	}
	ce := t.accessLog.Check(lvl, "request")
	if ce == nil {
		return
	}
	fields := make([]zap.Field, 0, 9)
	fields = append(fields,
		zap.String("method", r.Method),
		zap.String("route", route),
		zap.String("path", r.URL.Path),
		zap.Int("status", status),
		zap.Duration("duration", d),
		zap.Int64("bytes", bytes),
		zap.String("remote", r.RemoteAddr))
	if sc.IsValid() {
		ids := spanIDs(sc)
		fields = append(fields, zap.String(FieldTraceID, ids[:32]), zap.String(FieldSpanID, ids[32:]))
	}
	ce.Write(fields...)
}

// respWriter observes the status code and body size. It offers Flush and Unwrap (so
// http.ResponseController reaches the real writer); h1Writer adds Hijack and ReadFrom for HTTP/1
// connections, so a type assertion for http.Hijacker succeeds only where hijacking works.
type respWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *respWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 { // 1xx informational responses are not the final status
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *respWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type h1Writer respWriter

func (w *h1Writer) Header() http.Header         { return w.ResponseWriter.Header() }
func (w *h1Writer) WriteHeader(code int)        { (*respWriter)(w).WriteHeader(code) }
func (w *h1Writer) Write(b []byte) (int, error) { return (*respWriter)(w).Write(b) }
func (w *h1Writer) Flush()                      { (*respWriter)(w).Flush() }
func (w *h1Writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }
func (w *h1Writer) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return w.ResponseWriter.(http.Hijacker).Hijack()
}

// ReadFrom keeps net/http's sendfile path for io.Copy into the response.
func (w *h1Writer) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(w.ResponseWriter, src)
	}
	w.bytes += n
	return n, err
}
