package grpcclient

import (
	"context"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cloudchassis/kit/internal/grpcwire"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

const (
	// MetricCallDuration is the client's RED histogram: seconds per call (retries and hedges
	// included), with rpc.system, rpc.service, rpc.method, rpc.grpc.status_code and peer.service.
	MetricCallDuration = semconv.RPCClientCallDuration

	attrRPCSystem     = semconv.AttrRPCSystem
	attrRPCService    = semconv.AttrRPCService
	attrRPCMethod     = semconv.AttrRPCMethod
	attrRPCStatusCode = semconv.AttrRPCGRPCStatusCode
	rpcSystemGRPC     = semconv.RPCSystemGRPC
	// RequestIDKey is the metadata key of the request id, as the HTTP clients send X-Request-Id.
	RequestIDKey = grpcwire.RequestID
)

// durationBuckets are the boundaries of http.client.request.duration (OTel's HTTP defaults), so
// that HTTP and gRPC dependencies share dashboards.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

type instruments struct {
	service    string
	duration   metric.Float64Histogram
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	attrs      sync.Map // methodCode -> metric.RecordOption
}

type methodCode struct {
	method string
	code   codes.Code
}

func newInstruments(service string, mp metric.MeterProvider, tp trace.TracerProvider, p propagation.TextMapPropagator) (*instruments, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	d, err := mp.Meter(semconv.ScopeChassis).Float64Histogram(MetricCallDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of gRPC client calls, retries and hedges included."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		return nil, err
	}
	return &instruments{service: service, duration: d, tracer: tp.Tracer(semconv.ScopeChassis), propagator: p}, nil
}

// splitMethod splits "/pkg.Service/Method".
func splitMethod(full string) (service, method string) {
	s, m, ok := strings.Cut(strings.TrimPrefix(full, "/"), "/")
	if !ok {
		return "", s
	}
	return s, m
}

// start opens the call's client span, and adds the trace context and the request id to the
// outgoing metadata. end records the duration and closes the span.
func (t *instruments) start(ctx context.Context, method string, requestID func(context.Context) string) (context.Context, func(context.Context, error)) {
	begin := time.Now()
	svc, m := splitMethod(method)
	ctx, span := t.tracer.Start(ctx, strings.TrimPrefix(method, "/"), trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(attribute.String(attrRPCSystem, rpcSystemGRPC), attribute.String(attrRPCService, svc),
			attribute.String(attrRPCMethod, m), attribute.String(semconv.AttrPeerService, t.service))
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	var add []string
	if t.propagator != nil {
		carrier := propagation.MapCarrier{}
		t.propagator.Inject(ctx, carrier)
		for k, v := range carrier {
			add = append(add, k, v)
		}
	}
	if requestID != nil && len(md.Get(RequestIDKey)) == 0 {
		if id := requestID(ctx); id != "" {
			add = append(add, RequestIDKey, id)
		}
	}
	if len(add) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, add...)
	}
	return ctx, func(ctx context.Context, err error) {
		code := status.Code(err)
		t.duration.Record(ctx, time.Since(begin).Seconds(), t.recordOption(method, code))
		if span.IsRecording() {
			span.SetAttributes(attribute.Int(attrRPCStatusCode, int(code)))
			if err != nil {
				span.RecordError(err)
				span.SetStatus(otelcodes.Error, code.String())
			}
		}
		span.End()
	}
}

// recordOption returns the attribute set of a method and code, built once: the series are bounded
// by the methods called times 17 codes.
func (t *instruments) recordOption(method string, code codes.Code) metric.RecordOption {
	k := methodCode{method, code}
	if v, ok := t.attrs.Load(k); ok {
		return v.(metric.RecordOption)
	}
	svc, m := splitMethod(method)
	o := metric.WithAttributeSet(attribute.NewSet(
		attribute.String(attrRPCSystem, rpcSystemGRPC), attribute.String(attrRPCService, svc),
		attribute.String(attrRPCMethod, m), attribute.Int(attrRPCStatusCode, int(code)),
		attribute.String(semconv.AttrPeerService, t.service)))
	v, _ := t.attrs.LoadOrStore(k, o)
	return v.(metric.RecordOption)
}
