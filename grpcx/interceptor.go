package grpcx

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/guard"
	"github.com/cloudchassis/kit/internal/grpcwire"
	"github.com/cloudchassis/kit/internal/reqctx"
	"github.com/cloudchassis/kit/internal/requestid"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Metadata keys the interceptors read and write.
const (
	// RequestIDKey carries a call's request id in (optional) and out (response header, always).
	RequestIDKey = grpcwire.RequestID
	// PushbackKey is the trailer that tells a refused caller when to retry, in milliseconds
	// (grpc-go's retry honours it), beside the google.rpc.RetryInfo detail.
	PushbackKey = grpcwire.Pushback
)

// healthPrefix is the service of the health protocol, which the chain does not intercept: probes
// need no token, are never shed or limited, and are not traced (like /readyz on the admin port).
const healthPrefix = "/grpc.health.v1.Health/"

// maxMethods bounds the per-method cache. Interceptors only see registered methods unless the
// server has an UnknownServiceHandler, whose calls past the bound are instrumented uncached, as
// _OTHER. A variable so that a test can lower it.
var maxMethods = 4096

// Bucket boundaries (seconds) of rpc.server.call.duration: those of http.server.request.duration.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// Interceptors is the chassis' server chain for gRPC, the same stages in the same order as the HTTP
// chain of chassis.Service.Handle, as one unary and one stream interceptor (one closure call per
// RPC, not one per stage):
//
//  1. telemetry: the caller's trace context continued from the metadata, a server span named
//     "pkg.Service/Method" with rpc.system, rpc.service, rpc.method and rpc.grpc.status_code,
//     rpc.server.call.duration per full method and code, rpc.server.active_calls, the access log;
//  2. recovery: a panic becomes INTERNAL (message "internal error"), logged with its stack, and the
//     server keeps serving; request id: the caller's well-formed x-request-id, else the trace id,
//     else a random id, sent back in the response header; deadline: the caller's, capped by
//     WithRequestTimeout;
//  3. adaptive load shedding (WithShedder): UNAVAILABLE with retry information;
//  4. the mTLS peer identity (WithPeerIdentity) and bearer-token authentication (WithVerifier):
//     UNAUTHENTICATED, or PERMISSION_DENIED for a missing scope (WithMethodScopes);
//  5. rate limiting per caller (WithLimiter), after authentication so that it keys on the verified
//     subject: RESOURCE_EXHAUSTED with retry information;
//  6. the interceptors chained after these (grpc.ChainUnaryInterceptor), then the handler.
//
// Message size limits and keepalive enforcement are transport settings: ServerConfig.ServerOptions.
// The health service (grpc.health.v1.Health) bypasses the chain. Interceptors is safe for
// concurrent use.
type Interceptors struct {
	o         options
	tracer    trace.Tracer
	duration  metric.Float64Histogram
	active    atomic.Int64
	seen      atomic.Bool
	activeSet metric.ObserveOption
	reg       metric.Registration
	methods   atomic.Pointer[map[string]*method]
	grow      chan struct{} // a one-slot lock for inserts into methods
	fields    []string      // the metadata keys the propagator reads, lower case
}

// NewInterceptors builds the chain. It returns an error when the meter provider refuses an
// instrument.
func NewInterceptors(opts ...Option) (*Interceptors, error) {
	i := &Interceptors{o: newOptions(opts), grow: make(chan struct{}, 1)}
	i.tracer = i.o.tracers.Tracer(semconv.ScopeTelemetry)
	for _, f := range i.o.propagator.Fields() {
		i.fields = append(i.fields, strings.ToLower(f))
	}
	m := i.o.Meters.Meter(semconv.ScopeTelemetry)
	var err error
	i.duration, err = m.Float64Histogram(semconv.RPCServerCallDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of gRPC server calls."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	if err != nil {
		return nil, fmt.Errorf("grpcx: metrics: %w", err)
	}
	active, err := m.Int64ObservableUpDownCounter(semconv.RPCServerActiveCalls, metric.WithUnit("{call}"),
		metric.WithDescription("Number of gRPC server calls in progress."))
	if err != nil {
		return nil, fmt.Errorf("grpcx: metrics: %w", err)
	}
	i.activeSet = metric.WithAttributeSet(attribute.NewSet(attribute.String(semconv.AttrRPCSystem, semconv.RPCSystemGRPC)))
	i.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if i.seen.Load() {
			o.ObserveInt64(active, i.active.Load(), i.activeSet)
		}
		return nil
	}, active)
	if err != nil {
		return nil, fmt.Errorf("grpcx: metrics: %w", err)
	}
	empty := map[string]*method{}
	i.methods.Store(&empty)
	return i, nil
}

// Close stops reporting rpc.server.active_calls; it matters only when the meter provider outlives
// the Interceptors.
func (i *Interceptors) Close() error {
	if i.reg != nil {
		return i.reg.Unregister()
	}
	return nil
}

// Unary returns the unary server interceptor. Pass it to grpc.ChainUnaryInterceptor first, so that
// the user's interceptors run inside it.
func (i *Interceptors) Unary() grpc.UnaryServerInterceptor { return i.unary }

// Stream returns the stream server interceptor; see Unary.
func (i *Interceptors) Stream() grpc.StreamServerInterceptor { return i.stream }

// method is everything a call needs about its method, computed once.
type method struct {
	startOpts []trace.SpanStartOption
	record    [codes.Unauthenticated + 1][]metric.RecordOption
	priority  guard.Priority
	scopes    []string
}

func (i *Interceptors) method(full string) *method {
	if m, ok := (*i.methods.Load())[full]; ok {
		return m
	}
	i.grow <- struct{}{}
	defer func() { <-i.grow }()
	old := *i.methods.Load()
	if m, ok := old[full]; ok {
		return m
	}
	if len(old) >= maxMethods {
		// Method names beyond the table come from callers (a server with an UnknownServiceHandler
		// takes any name): they keep their own scopes and priority, but their spans and series
		// are named _OTHER, as the OTel conventions say, so that callers cannot grow the metrics
		// without bound.
		return i.buildAs(full, otherMethod, otherMethod)
	}
	m := i.build(full)
	next := make(map[string]*method, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[full] = m
	i.methods.Store(&next)
	return m
}

// otherMethod names the service and the method of calls beyond the method table (maxMethods).
const otherMethod = "_OTHER"

// SplitMethod splits a full method name "/pkg.Service/Method" into "pkg.Service" and "Method".
func SplitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if j := strings.LastIndexByte(full, '/'); j >= 0 {
		return full[:j], full[j+1:]
	}
	return "", full
}

func (i *Interceptors) build(full string) *method {
	svc, name := SplitMethod(full)
	return i.buildAs(full, svc, name)
}

// buildAs builds full's entry (scopes, priority) with svc and name in its spans and series.
func (i *Interceptors) buildAs(full, svc, name string) *method {
	base := []attribute.KeyValue{
		attribute.String(semconv.AttrRPCSystem, semconv.RPCSystemGRPC),
		attribute.String(semconv.AttrRPCService, svc),
		attribute.String(semconv.AttrRPCMethod, name),
	}
	m := &method{
		startOpts: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(base...)},
		scopes:    i.o.scopes[full],
	}
	if p, ok := i.o.priorities[full]; ok {
		m.priority = p
	}
	for c := range m.record {
		attrs := append(base[:len(base):len(base)], attribute.Int(semconv.AttrRPCGRPCStatusCode, c))
		m.record[c] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))}
	}
	return m
}

// call is one call's state: its context layer (request id and lazy deadline, shared with the HTTP
// server's) and its stream wrapper, in one allocation.
type call struct {
	ctx    reqctx.Context
	id     string
	idText [32]byte
	ss     stream
}

type requestIDKey struct{}

// RequestID returns the request id of the gRPC call whose context ctx is (or derives from), or "".
// chassis.RequestID answers it too.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// stream gives a stream handler the call's context.
type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stream) Context() context.Context { return s.ctx }

func (i *Interceptors) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	if strings.HasPrefix(info.FullMethod, healthPrefix) {
		return handler(ctx, req)
	}
	err = i.serve(ctx, info.FullMethod, false, func(ctx context.Context, _ *call) (err error) {
		resp, err = handler(ctx, req)
		return err
	})
	return resp, err
}

func (i *Interceptors) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if strings.HasPrefix(info.FullMethod, healthPrefix) {
		return handler(srv, ss)
	}
	return i.serve(ss.Context(), info.FullMethod, true, func(ctx context.Context, c *call) error {
		c.ss.ServerStream, c.ss.ctx = ss, ctx
		return handler(srv, &c.ss)
	})
}

// serve runs one call through the chain; run calls the handler with the call's context. (run does
// not escape: the closures of unary and stream stay on the stack.)
//
// A stream lives as long as its caller wants: it gets no deadline of ours (GRPC_REQUEST_TIMEOUT
// caps unary calls), and it gives its shedder slot back once admitted, without a latency sample,
// so that long streams neither fill the concurrency limit nor read as a slow server.
func (i *Interceptors) serve(ctx context.Context, full string, isStream bool, run func(context.Context, *call) error) (err error) {
	m := i.method(full)
	timeout := i.o.timeout
	if isStream {
		timeout = 0
	}
	c, ctx, span, start := i.begin(ctx, full, m, timeout)
	defer func() {
		if p := recover(); p != nil {
			err = i.recovered(ctx, full, p)
		}
		c.ctx.Release()
		i.end(ctx, c, m, full, span, start, err)
	}()
	ctx, done, err := i.admit(ctx, full, m)
	if err != nil {
		return err
	}
	if isStream {
		done.Discard()
	} else {
		defer done.Done()
	}
	return run(ctx, c)
}

// begin is the telemetry, request-id and deadline half of a call's start. The deadline is lazy
// (reqctx): no timer unless something waits on the context's Done.
func (i *Interceptors) begin(ctx context.Context, full string, m *method, timeout time.Duration) (*call, context.Context, trace.Span, time.Time) {
	start := time.Now()
	if i.carried(ctx) {
		ctx = i.o.propagator.Extract(ctx, mdCarrier{ctx})
	}
	ctx, span := i.tracer.Start(ctx, strings.TrimPrefix(full, "/"), m.startOpts...)
	i.active.Add(1)
	if !i.seen.Load() {
		i.seen.Store(true)
	}
	c := &call{}
	if id := first(ctx, RequestIDKey); requestid.Valid(id) {
		c.id = id
	} else if sc := span.SpanContext(); sc.HasTraceID() {
		// The trace id's text lives in the call, which is allocated anyway, and is written once
		// here: the string stays immutable for as long as anything refers to it.
		tid := sc.TraceID()
		hex.Encode(c.idText[:], tid[:])
		c.id = unsafe.String(&c.idText[0], len(c.idText))
	} else {
		c.id = requestid.Random(16)
	}
	_ = grpc.SetHeader(ctx, metadata.MD{RequestIDKey: []string{c.id}})
	c.ctx.Init(ctx, requestIDKey{}, c.id, start, timeout)
	return c, &c.ctx, span, start
}

// carried reports whether the metadata holds a key the propagator reads: without one, Extract would
// find nothing.
func (i *Interceptors) carried(ctx context.Context) bool {
	for _, k := range i.fields {
		if first(ctx, k) != "" {
			return true
		}
	}
	return false
}

// admit runs shedding, authentication and rate limiting. The ticket's Done must be called once the
// handler returns (a zero ticket's Done does nothing).
func (i *Interceptors) admit(ctx context.Context, full string, m *method) (context.Context, guard.Ticket, error) {
	var t guard.Ticket
	if i.o.shedder != nil {
		p := m.priority
		if p == guard.PriorityDefault && i.o.priorityKey != "" {
			if v := first(ctx, i.o.priorityKey); v != "" {
				if q, ok := guard.ParsePriority(v); ok && q == guard.PrioritySheddable {
					p = q // metadata can only lower a call's priority
				}
			}
		}
		var retry time.Duration
		var ok bool
		if t, retry, ok = i.o.shedder.AcquireRPC(ctx, p, full); !ok {
			return ctx, t, refusal(ctx, codes.Unavailable, "server overloaded; retry later", retry)
		}
	}
	ctx, err := i.authenticate(ctx, full, m)
	if err == nil && i.o.limiter != nil {
		caller := auth.Subject(ctx)
		if caller == "" {
			caller = i.peerKey(ctx)
		}
		if d := i.o.limiter.AllowRPC(ctx, full, caller); !d.Allowed {
			retry := max(time.Second, d.RetryAfter.Round(time.Millisecond))
			err = refusal(ctx, codes.ResourceExhausted, "rate limit exceeded; retry later", retry)
		}
	}
	if err != nil {
		t.Done()
		return ctx, guard.Ticket{}, err
	}
	return ctx, t, nil
}

// refusal is a status with a google.rpc.RetryInfo detail, and sets the pushback trailer.
func refusal(ctx context.Context, code codes.Code, msg string, retry time.Duration) error {
	_ = grpc.SetTrailer(ctx, metadata.MD{PushbackKey: []string{strconv.FormatInt(retry.Milliseconds(), 10)}})
	st := status.New(code, msg)
	if d, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(retry)}); err == nil {
		st = d
	}
	return st.Err()
}

var (
	errNoToken      = status.Error(codes.Unauthenticated, "missing bearer token")
	errInvalidToken = status.Error(codes.Unauthenticated, "invalid bearer token")
	errScope        = status.Error(codes.PermissionDenied, "insufficient scope")
)

func (i *Interceptors) authenticate(ctx context.Context, full string, m *method) (context.Context, error) {
	var peerP *auth.Principal
	if i.o.peerIdentity {
		if p := peerPrincipal(ctx); p != nil {
			peerP = p
			ctx = auth.WithPrincipal(ctx, p)
		}
	}
	if v := i.o.verifier; v != nil {
		header := first(ctx, "authorization")
		tok, ok := bearer(header)
		switch {
		case !ok && header == "" && i.o.optional:
		case !ok:
			return ctx, errNoToken
		default:
			p, err := v.Verify(ctx, tok)
			if err != nil {
				if i.o.Logger.Enabled(ctx, slog.LevelDebug) {
					i.o.Logger.LogAttrs(ctx, slog.LevelDebug, "bearer token refused",
						slog.String("method", full), slog.String("error", err.Error()))
				}
				return ctx, errInvalidToken
			}
			if peerP != nil {
				p.Peer = peerP.Subject
			}
			ctx = auth.WithPrincipal(ctx, p)
		}
	}
	if len(m.scopes) > 0 {
		p, ok := auth.PrincipalFrom(ctx)
		if !ok {
			return ctx, errNoToken
		}
		for _, s := range m.scopes {
			if !p.HasScope(s) {
				return ctx, errScope
			}
		}
	}
	return ctx, nil
}

func bearer(h string) (string, bool) {
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	tok := strings.TrimSpace(h[7:])
	return tok, tok != ""
}

// peerPrincipal is auth.PeerIdentity for a gRPC connection: only a certificate that chained to the
// client CAs counts.
func peerPrincipal(ctx context.Context) *auth.Principal {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	cert := ti.State.VerifiedChains[0][0]
	return &auth.Principal{Subject: auth.CertIdentity(cert), Method: auth.MethodMTLS,
		Issuer: cert.Issuer.String(), Expires: cert.NotAfter}
}

// peerKey names an anonymous caller by its address; IPv6 callers by their prefix.
func (i *Interceptors) peerKey(ctx context.Context) string {
	pr, ok := peer.FromContext(ctx)
	if !ok || pr.Addr == nil {
		return ""
	}
	var a netip.Addr
	if tcp, ok := pr.Addr.(*net.TCPAddr); ok {
		a = tcp.AddrPort().Addr().Unmap()
	} else if ap, err := netip.ParseAddrPort(pr.Addr.String()); err == nil {
		a = ap.Addr().Unmap()
	} else {
		return "addr:" + pr.Addr.String() // bufconn, Unix sockets: one bucket per listener name
	}
	if a.Is6() {
		if p, err := a.Prefix(i.o.ipv6Prefix); err == nil {
			a = p.Addr()
		}
	}
	return "ip:" + a.String()
}

func (i *Interceptors) recovered(ctx context.Context, full string, p any) error {
	i.o.Logger.LogAttrs(ctx, slog.LevelError, "handler panicked",
		slog.String("method", full), slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
	return status.Error(codes.Internal, "internal error")
}

// end is the telemetry half of a call's end.
func (i *Interceptors) end(ctx context.Context, c *call, m *method, full string, span trace.Span, start time.Time, err error) {
	code := codeOf(err)
	d := time.Since(start)
	rec := m.record[codes.Unknown]
	if code <= codes.Unauthenticated {
		rec = m.record[code]
	}
	i.duration.Record(ctx, d.Seconds(), rec...)
	i.active.Add(-1)
	serverErr := ServerError(code)
	if span.IsRecording() {
		span.SetAttributes(attribute.Int(semconv.AttrRPCGRPCStatusCode, int(code)))
		if serverErr {
			span.SetStatus(otelcodes.Error, code.String())
		}
	}
	span.End()
	if !i.o.access {
		return
	}
	lvl := slog.LevelInfo
	if serverErr {
		lvl = slog.LevelError
	} else if code == codes.OK && i.o.accessSample < 1 && rand.Float64() >= i.o.accessSample {
		return
	}
	if i.o.accessLogger == nil && !i.o.Logger.Enabled(ctx, lvl) {
		return
	}
	remote := ""
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		remote = pr.Addr.String()
	}
	if i.o.accessLogger != nil {
		i.o.accessLogger.LogRPC(serverErr, full, code.String(), d, remote, c.id, span.SpanContext())
		return
	}
	i.o.Logger.LogAttrs(ctx, lvl, "rpc",
		slog.String("method", full),
		slog.String("code", code.String()),
		slog.Duration("duration", d),
		slog.String("remote", remote),
		slog.String("request_id", c.id))
}

// codeOf is the code the caller receives for a handler's error: grpc-go answers a plain context
// error (ctx.Err(), or an error wrapping it) with CANCELLED or DEADLINE_EXCEEDED, not UNKNOWN.
func codeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if st, ok := status.FromError(err); ok {
		return st.Code()
	}
	return status.FromContextError(err).Code()
}

// ServerError reports whether code is a server error in the OpenTelemetry RPC conventions (the
// span's status is Error, the access line is logged at Error): UNKNOWN, DEADLINE_EXCEEDED,
// UNIMPLEMENTED, INTERNAL, UNAVAILABLE and DATA_LOSS.
func ServerError(code codes.Code) bool {
	switch code {
	case codes.Unknown, codes.DeadlineExceeded, codes.Unimplemented, codes.Internal, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}

// first returns the first value of an incoming metadata key (lower case), without copying the
// metadata.
func first(ctx context.Context, key string) string {
	if v := metadata.ValueFromIncomingContext(ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// mdCarrier reads the propagation keys from the incoming metadata.
type mdCarrier struct{ ctx context.Context }

func (c mdCarrier) Get(key string) string { return first(c.ctx, strings.ToLower(key)) }
func (c mdCarrier) Set(string, string)    {}
func (c mdCarrier) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	return keys
}
