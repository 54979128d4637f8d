package grpcclient

import (
	"context"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/resilience"
)

// Option configures New.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	cfg        resilience.Config
	ropts      []resilience.Option
	lb         []lb.Option
	idempotent []string
	port       int
	dial       []grpc.DialOption
	unary      []grpc.UnaryClientInterceptor
	stream     []grpc.StreamClientInterceptor
	meter      metric.MeterProvider
	tracer     trace.TracerProvider
	propagator propagation.TextMapPropagator
	requestID  func(context.Context) string
	classifier discovery.Classifier
}

// WithResilience sets the dependency's resilience settings (CLIENT_<NAME>_* in chassis) and
// options such as resilience.WithClassifier. Default: resilience.DefaultConfig(), the classifier
// reading the gRPC code table (docs/grpc.md#clients). The meter and tracer providers of this
// package's WithMeterProvider and WithTracerProvider are passed on.
func WithResilience(cfg resilience.Config, opts ...resilience.Option) Option {
	return optionFunc(func(o *options) { o.cfg, o.ropts = cfg, append(o.ropts, opts...) })
}

// WithClassifier replaces the classifier every policy reads attempts through (default
// discovery.Classify, on the responses described at HTTPStatus); Code returns an attempt's gRPC
// code. It is resilience.WithClassifier, kept apart from WithResilience so that chassis'
// CLIENT_<NAME>_* settings stay in force.
func WithClassifier(c discovery.Classifier) Option {
	return optionFunc(func(o *options) { o.classifier = c })
}

// WithBalancer passes options to the dependency's balancer: the policy by name (lb.WithPolicy,
// default P2C peak-EWMA), outlier ejection, clocks for tests. lb.WithInstanceTransport,
// lb.WithAvailability and lb.WithBaseTransport are set by the client and replace any given here.
func WithBalancer(opts ...lb.Option) Option {
	return optionFunc(func(o *options) { o.lb = append(o.lb, opts...) })
}

// WithIdempotent declares methods, by full name ("/shop.Pricing/Get"), safe to send more than once:
// they are retried after a failure the callee may have seen and may be hedged. Methods whose proto
// definition says `option idempotency_level = IDEMPOTENT` (or NO_SIDE_EFFECTS) are idempotent
// without it, and resilience.MarkRetryable marks one call. Any other call is sent again only when
// the first attempt provably never left this process.
func WithIdempotent(methods ...string) Option {
	return optionFunc(func(o *options) { o.idempotent = append(o.idempotent, methods...) })
}

// WithPort dials every instance at this port instead of its advertised one: for static lists of
// HTTP addresses and registries that do not advertise MetaPort. 0 (the default) dials the port in
// the instance's MetaPort metadata, else the instance's port.
func WithPort(port int) Option { return optionFunc(func(o *options) { o.port = port }) }

// WithDialOptions adds options to grpc.NewClient: transport credentials (default: insecure), a
// custom dialer (bufconn in tests), message size limits, keepalive. Options that set the resolver,
// the balancer or the idle timeout are overridden by the client's own.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return optionFunc(func(o *options) { o.dial = append(o.dial, opts...) })
}

// WithInterceptors adds interceptors that run for every attempt (after the balancer chose the
// instance, which Instance reads from the context), below the client's policies: fault injection
// in tests, per-attempt logging. nil ones are skipped.
func WithInterceptors(unary grpc.UnaryClientInterceptor, stream grpc.StreamClientInterceptor) Option {
	return optionFunc(func(o *options) {
		if unary != nil {
			o.unary = append(o.unary, unary)
		}
		if stream != nil {
			o.stream = append(o.stream, stream)
		}
	})
}

// WithMeterProvider sets where the client's metrics go (rpc.client.call.duration, the balancer's
// and the resilience policies'). Default: none (the OpenTelemetry global is never read).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.meter = mp })
}

// WithTracerProvider sets where client spans go. Default: none.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(o *options) { o.tracer = tp })
}

// WithPropagator injects the trace context into the outgoing metadata (W3C traceparent). Default:
// none.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return optionFunc(func(o *options) { o.propagator = p })
}

// WithRequestID sends f(ctx), when not empty, as the x-request-id metadata of every call that
// does not carry one already (chassis passes chassis.RequestID).
func WithRequestID(f func(context.Context) string) Option {
	return optionFunc(func(o *options) { o.requestID = f })
}
