package grpcx

import (
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/guard"
	"github.com/cloudchassis/kit/internal/obs"
)

// Option configures NewInterceptors and NewHealth.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	obs.Sinks
	tracers    trace.TracerProvider
	propagator propagation.TextMapPropagator

	access       bool
	accessSample float64
	accessLogger AccessLogger // nil: the slog logger

	timeout time.Duration

	shedder     *guard.Shedder
	priorityKey string
	priorities  map[string]guard.Priority

	verifier     *auth.Verifier
	optional     bool
	scopes       map[string][]string
	peerIdentity bool

	limiter    *guard.Limiter
	ipv6Prefix int

	poll time.Duration // Health's Watch re-evaluates readiness this often
}

func newOptions(opts []Option) options {
	o := options{
		Sinks:        obs.Defaults(),
		tracers:      tracenoop.NewTracerProvider(),
		propagator:   propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		accessSample: 1,
		timeout:      DefaultConfig().RequestTimeout,
		priorityKey:  "x-request-priority",
		ipv6Prefix:   64,
		poll:         DefaultWatchInterval,
	}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}

// WithTracerProvider sets where spans go (default: a no-op provider; chassis passes its own).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(o *options) {
		if tp != nil {
			o.tracers = tp
		}
	})
}

// WithMeterProvider sets where metrics go (default: a no-op provider).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.SetMeterProvider(mp) })
}

// WithPropagator sets how the caller's trace context is read from the request metadata (default:
// W3C trace context and baggage).
func WithPropagator(p propagation.TextMapPropagator) Option {
	return optionFunc(func(o *options) {
		if p != nil {
			o.propagator = p
		}
	})
}

// WithLogger sets the logger of panics and of the access log when WithAccessLogger does not replace
// it (default: discard); refusals are counted and logged by the shedder and the limiter. Records are
// logged with the call's context, so a handler that adds trace ids from the context (chassis'
// does) ties every line to its span.
func WithLogger(l *slog.Logger) Option { return optionFunc(func(o *options) { o.SetLogger(l) }) }

// WithAccessLog logs one line per call ("rpc", at Info; at Error for the codes that are server
// errors), sampling successful calls at rate (0-1); failed ones are always logged. Off by default.
func WithAccessLog(on bool, rate float64) Option {
	return optionFunc(func(o *options) { o.access, o.accessSample = on, max(0, min(1, rate)) })
}

// AccessLogger writes the access line of a call. *telemetry.Telemetry is one: its LogRPC writes
// the line straight to the log output, at a fraction of a logger's cost per call.
type AccessLogger interface {
	LogRPC(serverError bool, method, code string, d time.Duration, remote, requestID string, sc trace.SpanContext)
}

// WithAccessLogger writes the access log (WithAccessLog) through l instead of the logger of
// WithLogger; chassis passes its telemetry.
func WithAccessLogger(l AccessLogger) Option {
	return optionFunc(func(o *options) { o.accessLogger = l })
}

// WithRequestTimeout caps the deadline of every call's context (default DefaultConfig's
// RequestTimeout, 30 s): a caller's shorter deadline is kept, a longer one or none is cut to d.
// 0 keeps the caller's deadline alone.
func WithRequestTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.timeout = max(0, d) })
}

// WithShedder admits calls through s (adaptive load shedding). A refused call fails with
// UNAVAILABLE, the shedder's Retry-After as a google.rpc.RetryInfo detail and a
// grpc-retry-pushback-ms trailer, so that clients retry elsewhere or later. A nil s sheds nothing.
func WithShedder(s *guard.Shedder) Option { return optionFunc(func(o *options) { o.shedder = s }) }

// WithPriorityKey names the request metadata that can mark a call sheddable (default
// "x-request-priority", the gRPC spelling of SHED_PRIORITY_HEADER's default). As over HTTP, it can
// only lower a call's priority.
func WithPriorityKey(key string) Option {
	return optionFunc(func(o *options) { o.priorityKey = strings.ToLower(key) })
}

// WithMethodPriorities sets shedding priorities by full method name ("/pkg.Service/Method"); a
// critical method is never shed.
func WithMethodPriorities(m map[string]guard.Priority) Option {
	return optionFunc(func(o *options) {
		o.priorities = make(map[string]guard.Priority, len(m))
		for k, v := range m {
			o.priorities[k] = v
		}
	})
}

// WithVerifier authenticates every call's bearer token (metadata "authorization: Bearer ...")
// with v. A call without one fails with UNAUTHENTICATED unless optional; an invalid token always
// does. The status message never says why a token was refused (the reason is logged at Debug).
func WithVerifier(v *auth.Verifier, optional bool) Option {
	return optionFunc(func(o *options) { o.verifier, o.optional = v, optional })
}

// WithMethodScopes requires scopes per full method name ("/pkg.Service/Method"): a call whose
// principal lacks one fails with PERMISSION_DENIED (UNAUTHENTICATED without a principal).
func WithMethodScopes(m map[string][]string) Option {
	return optionFunc(func(o *options) {
		o.scopes = make(map[string][]string, len(m))
		for k, v := range m {
			o.scopes[k] = append([]string(nil), v...)
		}
	})
}

// WithPeerIdentity puts the verified client certificate's identity (mutual TLS) in the call's
// context as an auth.Principal, as auth.PeerIdentity does over HTTP. A bearer token verified over
// the same connection keeps it as Principal.Peer.
func WithPeerIdentity(on bool) Option { return optionFunc(func(o *options) { o.peerIdentity = on }) }

// WithLimiter limits each caller's call rate with l (guard.Limiter.AllowRPC): callers are keyed by
// their authenticated subject, else by their address (IPv6 addresses by their /ipv6Prefix). A
// refused call fails with RESOURCE_EXHAUSTED, a google.rpc.RetryInfo detail and a
// grpc-retry-pushback-ms trailer. A nil l limits nothing.
func WithLimiter(l *guard.Limiter, ipv6Prefix int) Option {
	return optionFunc(func(o *options) {
		o.limiter = l
		if ipv6Prefix > 0 && ipv6Prefix <= 128 {
			o.ipv6Prefix = ipv6Prefix
		}
	})
}

// WithWatchInterval sets how often Health's Watch streams re-evaluate readiness between the
// changes Update announces (default DefaultWatchInterval).
func WithWatchInterval(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.poll = d
		}
	})
}
