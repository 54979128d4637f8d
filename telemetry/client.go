package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

// otherAddress replaces server.address once the client attribute cache is full, so that a client
// calling arbitrary hosts cannot grow the metric series without bound.
const otherAddress = "_OTHER"

type clientKey struct {
	host     string
	port     int
	template string
	method   uint8
	scheme   uint8
	status   uint16
	errType  string
}

type clientEntry struct {
	record   []metric.RecordOption
	spanName string
}

type clientInstruments struct {
	duration  metric.Float64Histogram
	cache     *attrCache[clientKey, *clientEntry]
	startOpts []trace.SpanStartOption
}

func newClientInstruments(m metric.Meter, cacheSize int) (*clientInstruments, error) {
	ci := &clientInstruments{cache: newAttrCache[clientKey, *clientEntry](cacheSize)}
	var err error
	ci.duration, err = m.Float64Histogram(semconv.HTTPClientRequestDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP client requests."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		return nil, err
	}
	ci.startOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
	return ci, nil
}

func buildClientEntry(k clientKey) *clientEntry {
	method := methods[k.method]
	attrs := []attribute.KeyValue{
		attribute.String(semconv.AttrHTTPRequestMethod, method),
		attribute.String(semconv.AttrURLScheme, schemes[k.scheme]),
		attribute.String(semconv.AttrServerAddress, k.host),
	}
	if k.port > 0 {
		attrs = append(attrs, attribute.Int(semconv.AttrServerPort, k.port))
	}
	if k.status > 0 {
		attrs = append(attrs, attribute.Int(semconv.AttrHTTPResponseStatusCode, int(k.status)))
	}
	if k.template != "" {
		attrs = append(attrs, attribute.String(semconv.AttrURLTemplate, k.template))
	}
	if k.errType != "" {
		attrs = append(attrs, attribute.String(semconv.AttrErrorType, k.errType))
	}
	e := &clientEntry{
		record:   []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))},
		spanName: method,
	}
	if method == "_OTHER" {
		e.spanName = "HTTP"
	}
	if k.template != "" {
		e.spanName += " " + k.template
	}
	return e
}

type urlTemplateKey struct{}

// WithURLTemplate returns a context that makes Transport label the request it carries with the
// low-cardinality template ("/items/{id}") instead of nothing: it becomes url.template on the
// metric and the span name "GET /items/{id}". Raw URLs never become metric attributes.
func WithURLTemplate(ctx context.Context, template string) context.Context {
	return context.WithValue(ctx, urlTemplateKey{}, template)
}

// Transport instruments outbound requests made through base (http.DefaultTransport when nil): a
// client span that is the child of the span in the request's context, W3C trace context and
// baggage injected into a copy of the request (the caller's request is not modified), and
// http.client.request.duration with server.address/port, method, status and url.template (see
// WithURLTemplate). The span ends when the response headers arrive or the round trip fails.
//
// server.address is the URL's host: with discovery it is the logical service name, so its
// cardinality is the number of services called; past the attribute cache bound it is recorded as
// "_OTHER".
func (t *Telemetry) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{t: t, base: base, tracer: t.tp.Tracer(semconv.ScopeTelemetry)}
}

type transport struct {
	t      *Telemetry
	base   http.RoundTripper
	tracer trace.Tracer
}

func (tr *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	ci := tr.t.client
	m := methodIndex(req.Method)
	var scheme uint8
	if req.URL.Scheme == "https" {
		scheme = 1
	}
	template, _ := req.Context().Value(urlTemplateKey{}).(string)
	name := methods[m]
	if template != "" {
		name = name + " " + template
	}
	ctx, span := tr.tracer.Start(req.Context(), name, ci.startOpts...)
	host, port := req.URL.Hostname(), portOf(req.URL)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String(semconv.AttrHTTPRequestMethod, methods[m]),
			attribute.String(semconv.AttrServerAddress, host),
			attribute.Int(semconv.AttrServerPort, port),
			attribute.String("url.full", redactURL(req.URL)))
		if template != "" {
			span.SetAttributes(attribute.String(semconv.AttrURLTemplate, template))
		}
	}

	// The RoundTripper contract forbids changing req: inject into a copy with its own header map.
	out := req.WithContext(ctx)
	out.Header = make(http.Header, len(req.Header)+2)
	for k, v := range req.Header {
		out.Header[k] = v
	}
	tr.t.propagator.Inject(ctx, headerCarrier(out.Header))

	resp, err := tr.base.RoundTrip(out)

	k := clientKey{host: host, port: port, template: template, method: m, scheme: scheme}
	if err != nil {
		k.errType = errorType(err)
	} else {
		k.status = uint16(resp.StatusCode)
		if resp.StatusCode >= 500 {
			k.errType = strconv.Itoa(resp.StatusCode)
		}
	}
	e, cached := ci.cache.get(k, buildClientEntry)
	if !cached {
		k.host, k.port, k.template = otherAddress, 0, ""
		e, _ = ci.cache.get(k, buildClientEntry)
	}
	ci.duration.Record(ctx, time.Since(start).Seconds(), e.record...)
	if span.IsRecording() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			span.SetAttributes(attribute.String(semconv.AttrErrorType, k.errType))
		} else {
			span.SetAttributes(attribute.Int(semconv.AttrHTTPResponseStatusCode, resp.StatusCode))
			if resp.StatusCode >= 400 { // for a client, 4xx is a failed call too
				span.SetStatus(codes.Error, "")
				span.SetAttributes(attribute.String(semconv.AttrErrorType, strconv.Itoa(resp.StatusCode)))
			}
		}
	}
	span.End()
	return resp, err
}

func portOf(u *url.URL) int {
	if p := u.Port(); p != "" {
		n, _ := strconv.Atoi(p)
		return n
	}
	if u.Scheme == "https" {
		return 443
	}
	return 80
}

// errorType classifies a transport error with a bounded set of values, as error.type requires.
func errorType(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return semconv.ReasonTimeout
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var uerr *url.Error
	if errors.As(err, &uerr) && uerr.Timeout() {
		return semconv.ReasonTimeout
	}
	var typed interface{ ErrorType() string }
	if errors.As(err, &typed) { // lets chassis' typed rejections name themselves
		return typed.ErrorType()
	}
	if uerr != nil {
		err = uerr.Err
	}
	return fmt.Sprintf("%T", err)
}

// redactURL drops user info from the URL recorded on spans; query values of the keys the semantic
// conventions list as signatures are replaced by "REDACTED".
func redactURL(u *url.URL) string {
	c := *u
	if c.User != nil {
		c.User = url.UserPassword("REDACTED", "REDACTED")
	}
	if c.RawQuery != "" {
		q := c.Query()
		changed := false
		for _, k := range []string{"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"} {
			if q.Has(k) {
				q.Set(k, "REDACTED")
				changed = true
			}
		}
		if changed {
			c.RawQuery = q.Encode()
		}
	}
	return c.String()
}
