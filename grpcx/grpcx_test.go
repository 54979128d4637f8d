package grpcx_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/grpcx"
	"github.com/cloudchassis/kit/guard"
	"github.com/cloudchassis/kit/internal/grpctest"
	"github.com/cloudchassis/kit/telemetry"
	"github.com/cloudchassis/kit/telemetry/semconv"
	"github.com/cloudchassis/kit/telemetry/telemetrytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// action is what the test service does, named by the request's "x-test" metadata.
const actionKey = "x-test"

// testService answers UnaryCall with what the test asks for (x-test metadata), and streams
// StreamingOutputCall's responses.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
	block   chan struct{} // "block" waits for it to close
	entered chan struct{}
}

func (s *testService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var action string
	if v := md.Get(actionKey); len(v) > 0 {
		action = v[0]
	}
	switch action {
	case "panic":
		panic("boom: secret detail")
	case "deadline":
		dl, ok := ctx.Deadline()
		if !ok {
			return &testgrpc.SimpleResponse{Username: "none"}, nil
		}
		return &testgrpc.SimpleResponse{Username: time.Until(dl).Round(time.Second).String()}, nil
	case "wait":
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	case "ctxerr": // a handler that returns its context's error as it is
		<-ctx.Done()
		return nil, fmt.Errorf("giving up: %w", ctx.Err())
	case "block":
		if s.entered != nil {
			s.entered <- struct{}{}
		}
		<-s.block
	case "requestid":
		return &testgrpc.SimpleResponse{Username: grpcx.RequestID(ctx)}, nil
	case "principal":
		p, ok := auth.PrincipalFrom(ctx)
		if !ok {
			return &testgrpc.SimpleResponse{Username: "anonymous"}, nil
		}
		return &testgrpc.SimpleResponse{Username: p.Method + ":" + p.Subject}, nil
	case "trace":
		return &testgrpc.SimpleResponse{Username: trace.SpanContextFromContext(ctx).TraceID().String()}, nil
	}
	return &testgrpc.SimpleResponse{Username: "ok", Payload: req.GetPayload()}, nil
}

func (s *testService) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, ss grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	var action string
	if md, _ := metadata.FromIncomingContext(ss.Context()); len(md.Get(actionKey)) > 0 {
		action = md.Get(actionKey)[0]
	}
	switch action {
	case "panic":
		panic("stream boom")
	case "deadline": // answers whether the stream's context has a deadline
		_, ok := ss.Context().Deadline()
		return ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte(strconv.FormatBool(ok))}})
	case "block":
		s.entered <- struct{}{}
		<-s.block
		return nil
	}
	for range req.GetResponseParameters() {
		if err := ss.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte(grpcx.RequestID(ss.Context()))}}); err != nil {
			return err
		}
	}
	return nil
}

// serve starts a server with the chain built from opts over bufconn and returns a client.
func serve(t *testing.T, svc *testService, opts []grpcx.Option, sopts ...grpc.ServerOption) testgrpc.TestServiceClient {
	t.Helper()
	chain, err := grpcx.NewInterceptors(opts...)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(chain.Unary()), grpc.ChainStreamInterceptor(chain.Stream()),
	}, sopts...)...)
	if svc == nil {
		svc = &testService{}
	}
	testgrpc.RegisterTestServiceServer(srv, svc)
	conn := start(t, srv)
	t.Cleanup(func() { _ = chain.Close() })
	return testgrpc.NewTestServiceClient(conn)
}

// start serves srv in process until the test ends.
func start(t *testing.T, srv *grpc.Server) *grpc.ClientConn {
	t.Helper()
	conn, stop, err := grpctest.Serve(srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return conn
}

func with(ctx context.Context, kv ...string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

func call(t *testing.T, c testgrpc.TestServiceClient, ctx context.Context, opts ...grpc.CallOption) (string, error) {
	t.Helper()
	res, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, opts...)
	return res.GetUsername(), err
}

func wantCode(t *testing.T, err error, code codes.Code, msg string) *status.Status {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || (msg != "" && st.Message() != msg) {
		t.Fatalf("got %v (%q), want %v (%q)", st.Code(), st.Message(), code, msg)
	}
	return st
}

func TestPanicIsInternalAndServerKeepsServing(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{ServiceName: "svc"})
	c := serve(t, nil, []grpcx.Option{grpcx.WithLogger(tel.Slog()), grpcx.WithMeterProvider(tel.MeterProvider()),
		grpcx.WithTracerProvider(tel.TracerProvider())})
	ctx := context.Background()

	_, err := call(t, c, with(ctx, actionKey, "panic"))
	wantCode(t, err, codes.Internal, "internal error") // the panic's value stays in the log
	st, err := c.StreamingOutputCall(with(ctx, actionKey, "panic"), &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	wantCode(t, err, codes.Internal, "internal error")
	if got, err := call(t, c, ctx); err != nil || got != "ok" {
		t.Fatalf("after the panics: %q %v", got, err)
	}

	logs := rec.Logs.FilterMessage("handler panicked").All()
	if len(logs) != 2 {
		t.Fatalf("want 2 panic logs, got %d", len(logs))
	}
	f := logs[0].ContextMap()
	if !strings.Contains(f["panic"].(string), "secret detail") || !strings.Contains(f["stack"].(string), "UnaryCall") ||
		f["method"] != "/grpc.testing.TestService/UnaryCall" || f[telemetry.FieldTraceID] == nil {
		t.Fatalf("panic log: %v", f)
	}
	if n := rec.HistogramCount(t, semconv.RPCServerCallDuration,
		attribute.String(semconv.AttrRPCMethod, "UnaryCall"), attribute.Int(semconv.AttrRPCGRPCStatusCode, int(codes.Internal))); n != 1 {
		t.Fatalf("INTERNAL calls counted: %d", n)
	}
}

func TestRequestID(t *testing.T) {
	c := serve(t, nil, nil)
	ctx := context.Background()
	var hdr metadata.MD
	got, err := call(t, c, with(ctx, actionKey, "requestid", "x-request-id", "caller-1"), grpc.Header(&hdr))
	if err != nil || got != "caller-1" || hdr.Get("x-request-id")[0] != "caller-1" {
		t.Fatalf("caller's id: %q %v %v", got, err, hdr)
	}
	// Absent or malformed: a fresh id, the same in the handler and in the header.
	for _, sent := range []string{"", "bad id with spaces", strings.Repeat("x", 129)} {
		ctx := with(ctx, actionKey, "requestid")
		if sent != "" {
			ctx = with(ctx, "x-request-id", sent)
		}
		got, err := call(t, c, ctx, grpc.Header(&hdr))
		if err != nil || len(got) != 32 || got == sent || hdr.Get("x-request-id")[0] != got {
			t.Fatalf("sent %q: got %q %v, header %v", sent, got, err, hdr)
		}
	}
	// Streams too.
	st, err := c.StreamingOutputCall(with(ctx, "x-request-id", "stream-1"), &testgrpc.StreamingOutputCallRequest{
		ResponseParameters: []*testgrpc.ResponseParameters{{}}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := st.Recv()
	if err != nil || string(res.GetPayload().GetBody()) != "stream-1" {
		t.Fatalf("stream: %v %v", res, err)
	}
}

func TestDeadline(t *testing.T) {
	c := serve(t, nil, []grpcx.Option{grpcx.WithRequestTimeout(10 * time.Second)})
	ctx := context.Background()
	// No deadline from the caller: the cap.
	if got, err := call(t, c, with(ctx, actionKey, "deadline")); err != nil || got != "10s" {
		t.Fatalf("no caller deadline: %q %v", got, err)
	}
	// A shorter deadline from the caller is kept; a longer one is cut.
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if got, err := call(t, c, with(short, actionKey, "deadline")); err != nil || got != "3s" {
		t.Fatalf("short caller deadline: %q %v", got, err)
	}
	long, cancel2 := context.WithTimeout(ctx, time.Hour)
	defer cancel2()
	if got, err := call(t, c, with(long, actionKey, "deadline")); err != nil || got != "10s" {
		t.Fatalf("long caller deadline: %q %v", got, err)
	}
	// The cap is enforced: a handler waiting on its context ends with DEADLINE_EXCEEDED.
	c = serve(t, nil, []grpcx.Option{grpcx.WithRequestTimeout(50 * time.Millisecond)})
	t0 := time.Now()
	_, err := call(t, c, with(ctx, actionKey, "wait"))
	wantCode(t, err, codes.DeadlineExceeded, "")
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

// issuer signs tokens for a verifier.
type issuer struct {
	key *ecdsa.PrivateKey
	v   *auth.Verifier
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.StaticKeys{"k1": &key.PublicKey}, auth.WithIssuer("https://issuer"))
	if err != nil {
		t.Fatal(err)
	}
	return &issuer{key: key, v: v}
}

func (is *issuer) token(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	base := jwt.MapClaims{"iss": "https://issuer", "sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range claims {
		base[k] = v
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, base)
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(is.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAuthentication(t *testing.T) {
	is := newIssuer(t)
	other := newIssuer(t)
	c := serve(t, nil, []grpcx.Option{grpcx.WithVerifier(is.v, false),
		grpcx.WithMethodScopes(map[string][]string{"/grpc.testing.TestService/UnaryCall": {"read"}})})
	ctx := with(context.Background(), actionKey, "principal")

	_, err := call(t, c, ctx)
	wantCode(t, err, codes.Unauthenticated, "missing bearer token")
	for name, tok := range map[string]string{
		"expired":      is.token(t, jwt.MapClaims{"exp": time.Now().Add(-time.Hour).Unix(), "scope": "read"}),
		"wrong key":    other.token(t, jwt.MapClaims{"scope": "read"}),
		"wrong issuer": is.token(t, jwt.MapClaims{"iss": "https://elsewhere", "scope": "read"}),
		"malformed":    "not.a.token",
		"not a bearer": "",
	} {
		h := "Bearer " + tok
		if name == "not a bearer" {
			h = "Basic YWxpY2U6cHc="
		}
		_, err := call(t, c, with(ctx, "authorization", h))
		// Every refusal reads the same: the reason is the server's to know (no detail leak).
		msg := "invalid bearer token"
		if name == "not a bearer" {
			msg = "missing bearer token"
		}
		st := wantCode(t, err, codes.Unauthenticated, msg)
		if len(st.Details()) != 0 {
			t.Fatalf("%s: details leaked: %v", name, st.Details())
		}
	}
	_, err = call(t, c, with(ctx, "authorization", "Bearer "+is.token(t, nil)))
	wantCode(t, err, codes.PermissionDenied, "insufficient scope")
	got, err := call(t, c, with(ctx, "authorization", "bearer "+is.token(t, jwt.MapClaims{"scope": "read write"})))
	if err != nil || got != "jwt:alice" {
		t.Fatalf("valid token: %q %v", got, err)
	}
	// Optional: no token passes anonymously, a bad one still fails.
	c = serve(t, nil, []grpcx.Option{grpcx.WithVerifier(is.v, true)})
	if got, err := call(t, c, ctx); err != nil || got != "anonymous" {
		t.Fatalf("optional, no token: %q %v", got, err)
	}
	_, err = call(t, c, with(ctx, "authorization", "Bearer x.y.z"))
	wantCode(t, err, codes.Unauthenticated, "invalid bearer token")
}

func retryInfo(t *testing.T, st *status.Status) time.Duration {
	t.Helper()
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	t.Fatalf("no RetryInfo in %v", st.Details())
	return 0
}

func TestRateLimit(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{ServiceName: "svc"})
	l, err := guard.NewLimiter(guard.Rate{PerSecond: 0.5, Burst: 2}, guard.WithMeterProvider(tel.MeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	is := newIssuer(t)
	c := serve(t, nil, []grpcx.Option{grpcx.WithLimiter(l, 64), grpcx.WithVerifier(is.v, true)})
	ctx := context.Background()
	for i := range 2 {
		if _, err := call(t, c, ctx); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	var trailer metadata.MD
	_, err = call(t, c, ctx, grpc.Trailer(&trailer))
	st := wantCode(t, err, codes.ResourceExhausted, "rate limit exceeded; retry later")
	if d := retryInfo(t, st); d < time.Second || d > 2*time.Second {
		t.Fatalf("retry delay %v, want about 2s", d)
	}
	if p := trailer.Get(grpcx.PushbackKey); len(p) != 1 || p[0] == "" || p[0] == "0" {
		t.Fatalf("pushback trailer: %v", trailer)
	}
	if n := rec.CounterValue(t, semconv.MetricServerRateLimited,
		attribute.String(semconv.AttrRPCMethod, "/grpc.testing.TestService/UnaryCall")); n != 1 {
		t.Fatalf("rate_limited counter: %v", n)
	}
	// Another caller (an authenticated subject) has its own bucket.
	if _, err := call(t, c, with(ctx, "authorization", "Bearer "+is.token(t, nil))); err != nil {
		t.Fatalf("other caller: %v", err)
	}
}

func TestShedding(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{ServiceName: "svc"})
	s, err := guard.NewShedder(guard.ShedConfig{InitialLimit: 1, MinLimit: 1, MaxLimit: 1}, guard.WithMeterProvider(tel.MeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	svc := &testService{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	c := serve(t, svc, []grpcx.Option{grpcx.WithShedder(s)})
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() {
		_, err := call(t, c, with(ctx, actionKey, "block"))
		errc <- err
	}()
	<-svc.entered
	var trailer metadata.MD
	_, err = call(t, c, ctx, grpc.Trailer(&trailer))
	st := wantCode(t, err, codes.Unavailable, "server overloaded; retry later")
	if d := retryInfo(t, st); d != time.Second {
		t.Fatalf("retry delay %v", d)
	}
	if p := trailer.Get(grpcx.PushbackKey); len(p) != 1 || p[0] != "1000" {
		t.Fatalf("pushback trailer: %v", trailer)
	}
	if n := rec.CounterValue(t, semconv.MetricServerShed, attribute.String(semconv.AttrPriority, "default"),
		attribute.String(semconv.AttrRPCMethod, "/grpc.testing.TestService/UnaryCall")); n != 1 {
		t.Fatalf("shed counter: %v", n)
	}
	// Metadata can lower a call's priority: a sheddable call is refused the same way.
	_, err = call(t, c, with(ctx, "x-request-priority", "sheddable"))
	wantCode(t, err, codes.Unavailable, "server overloaded; retry later")
	if n := rec.CounterValue(t, semconv.MetricServerShed, attribute.String(semconv.AttrPriority, "sheddable")); n != 1 {
		t.Fatalf("sheddable shed counter: %v", n)
	}
	close(svc.block)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if s.Inflight() != 0 {
		t.Fatalf("tickets not released: %d in flight", s.Inflight())
	}
	if _, err := call(t, c, ctx); err != nil {
		t.Fatalf("after the slot freed: %v", err)
	}
}

func TestCriticalMethodIsNeverShed(t *testing.T) {
	s, err := guard.NewShedder(guard.ShedConfig{InitialLimit: 1, MinLimit: 1, MaxLimit: 1})
	if err != nil {
		t.Fatal(err)
	}
	svc := &testService{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	c := serve(t, svc, []grpcx.Option{grpcx.WithShedder(s),
		grpcx.WithMethodPriorities(map[string]guard.Priority{"/grpc.testing.TestService/UnaryCall": guard.PriorityCritical})})
	ctx := context.Background()
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = call(t, c, with(ctx, actionKey, "block")) })
	<-svc.entered
	if _, err := call(t, c, ctx); err != nil {
		t.Fatalf("critical call shed: %v", err)
	}
	close(svc.block)
	wg.Wait()
}

func TestMessageSizeLimit(t *testing.T) {
	cfg := grpcx.DefaultConfig()
	cfg.MaxRecvBytes = 1024
	c := serve(t, nil, nil, cfg.ServerOptions()...)
	ctx := context.Background()
	_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 2048)}})
	wantCode(t, err, codes.ResourceExhausted, "")
	if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 512)}}); err != nil {
		t.Fatalf("within the limit: %v", err)
	}
}

func TestTelemetry(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{ServiceName: "svc"})
	c := serve(t, nil, []grpcx.Option{grpcx.WithTracerProvider(tel.TracerProvider()),
		grpcx.WithMeterProvider(tel.MeterProvider()), grpcx.WithPropagator(tel.Propagator()),
		grpcx.WithLogger(tel.Slog()), grpcx.WithAccessLog(true, 1)})
	// The caller's trace continues.
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), parent)
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	out := metadata.NewOutgoingContext(context.Background(), metadata.New(carrier))
	got, err := call(t, c, with(out, actionKey, "trace"))
	if err != nil || got != parent.TraceID().String() {
		t.Fatalf("trace not continued: %q %v", got, err)
	}
	_, err = c.EmptyCall(context.Background(), &testgrpc.Empty{}) // unimplemented: a server error
	wantCode(t, err, codes.Unimplemented, "")

	span := rec.AssertSpan(t, "grpc.testing.TestService/UnaryCall",
		attribute.String(semconv.AttrRPCSystem, "grpc"), attribute.String(semconv.AttrRPCService, "grpc.testing.TestService"),
		attribute.String(semconv.AttrRPCMethod, "UnaryCall"), attribute.Int(semconv.AttrRPCGRPCStatusCode, 0))
	if span != nil && (span.SpanKind() != trace.SpanKindServer || span.Parent().SpanID() != parent.SpanID()) {
		t.Fatalf("span kind %v, parent %v", span.SpanKind(), span.Parent())
	}
	failed := rec.AssertSpan(t, "grpc.testing.TestService/EmptyCall", attribute.Int(semconv.AttrRPCGRPCStatusCode, int(codes.Unimplemented)))
	if failed != nil && failed.Status().Code.String() != "Error" {
		t.Fatalf("unimplemented span status %v", failed.Status())
	}
	if n := rec.HistogramCount(t, semconv.RPCServerCallDuration, attribute.String(semconv.AttrRPCSystem, "grpc"),
		attribute.String(semconv.AttrRPCService, "grpc.testing.TestService"), attribute.String(semconv.AttrRPCMethod, "UnaryCall"),
		attribute.Int(semconv.AttrRPCGRPCStatusCode, 0)); n != 1 {
		t.Fatalf("duration histogram count %d", n)
	}
	if v := rec.CounterValue(t, semconv.RPCServerActiveCalls); v != 0 {
		t.Fatalf("active calls %v after all ended", v)
	}
	// One access line per call, tied to its trace; the failed one at Error.
	lines := rec.LogsWithTraceID(parent.TraceID())
	if len(lines) != 1 || lines[0].Message != "rpc" || lines[0].ContextMap()["code"] != "OK" ||
		lines[0].ContextMap()["method"] != "/grpc.testing.TestService/UnaryCall" {
		t.Fatalf("access lines of the trace: %v", lines)
	}
	if errs := rec.Logs.FilterMessage("rpc").FilterField(zap.String("code", "Unimplemented")).All(); len(errs) != 1 || errs[0].Level.String() != "error" {
		t.Fatalf("failed call's access line: %v", errs)
	}
}

func TestHealthMirrorsReadiness(t *testing.T) {
	var mu sync.Mutex
	ready := false
	setReady := func(v bool) { mu.Lock(); ready = v; mu.Unlock() }
	h := grpcx.NewHealth(func(context.Context) bool { mu.Lock(); defer mu.Unlock(); return ready },
		grpcx.WithWatchInterval(time.Hour)) // only Update announces changes here
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, &testService{})
	h.Register(srv)
	conn := start(t, srv)
	hc := healthClient(conn)
	ctx := context.Background()

	check := func(service string) (string, codes.Code) {
		res, err := hc.check(ctx, service)
		return res, status.Code(err)
	}
	for _, svc := range []string{"", "grpc.testing.TestService", "grpc.health.v1.Health"} {
		if st, code := check(svc); st != "NOT_SERVING" || code != codes.OK {
			t.Fatalf("starting, %q: %s %v", svc, st, code)
		}
	}
	if _, code := check("no.such.Service"); code != codes.NotFound {
		t.Fatalf("unknown service: %v", code)
	}
	w, err := hc.watch(ctx, "grpc.testing.TestService")
	if err != nil {
		t.Fatal(err)
	}
	if st := w(); st != "NOT_SERVING" {
		t.Fatalf("watch first: %s", st)
	}
	setReady(true)
	h.Update()
	if st := w(); st != "SERVING" {
		t.Fatalf("watch after ready: %s", st)
	}
	if st, _ := check(""); st != "SERVING" {
		t.Fatalf("check after ready: %s", st)
	}
	setReady(false) // the drain
	h.Update()
	if st := w(); st != "NOT_SERVING" {
		t.Fatalf("watch after drain: %s", st)
	}
	h.Close()
	if st := w(); st != "closed: Unavailable" {
		t.Fatalf("watch after Close: %s", st)
	}
}

type health struct{ c healthpb.HealthClient }

func healthClient(conn *grpc.ClientConn) health { return health{healthpb.NewHealthClient(conn)} }

func (h health) check(ctx context.Context, service string) (string, error) {
	res, err := h.c.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	return res.GetStatus().String(), err
}

// watch opens a Watch stream; each call of the function returned reads the next status, or
// "closed: <code>" when the stream ended.
func (h health) watch(ctx context.Context, service string) (func() string, error) {
	st, err := h.c.Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return nil, err
	}
	return func() string {
		res, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return "closed: EOF"
			}
			return "closed: " + status.Code(err).String()
		}
		return res.GetStatus().String()
	}, nil
}

// watchStream is a Health_WatchServer that hands each status to the test.
type watchStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent chan healthpb.HealthCheckResponse_ServingStatus
}

func (w *watchStream) Context() context.Context { return w.ctx }
func (w *watchStream) Send(r *healthpb.HealthCheckResponse) error {
	w.sent <- r.GetStatus()
	return nil
}

// Between Updates, Watch re-evaluates readiness every poll interval: a readiness check that
// starts failing shows within one interval, and nothing is sent while the status holds.
func TestHealthWatchPollsReadiness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ready atomic.Bool
		ready.Store(true)
		h := grpcx.NewHealth(func(context.Context) bool { return ready.Load() }, grpcx.WithWatchInterval(5*time.Second))
		ctx, cancel := context.WithCancel(context.Background())
		w := &watchStream{ctx: ctx, sent: make(chan healthpb.HealthCheckResponse_ServingStatus, 8)}
		done := make(chan error, 1)
		go func() { done <- h.Watch(&healthpb.HealthCheckRequest{}, w) }()
		if st := <-w.sent; st != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("first: %v", st)
		}
		start := time.Now()
		ready.Store(false) // a failing check, no Update
		if st := <-w.sent; st != healthpb.HealthCheckResponse_NOT_SERVING || time.Since(start) != 5*time.Second {
			t.Fatalf("after %v: %v", time.Since(start), st)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if len(w.sent) != 0 {
			t.Fatalf("%d sends while the status held", len(w.sent))
		}
		cancel()
		if err := <-done; status.Code(err) != codes.Canceled {
			t.Fatalf("Watch after the caller left: %v", err)
		}
	})
}

// A handler that returns its context's error unwrapped is recorded with the code the caller gets
// (CANCELLED), not as UNKNOWN, a server error.
func TestContextErrorCode(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{ServiceName: "svc"})
	// The server's own cap ends the first call (a caller's deadline would race with its
	// cancellation, which reaches the server as CANCELLED).
	c := serve(t, nil, []grpcx.Option{grpcx.WithMeterProvider(tel.MeterProvider()), grpcx.WithRequestTimeout(100 * time.Millisecond)})
	_, err := call(t, c, with(context.Background(), actionKey, "ctxerr"))
	wantCode(t, err, codes.DeadlineExceeded, "")
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel2)
	_, err = call(t, c, with(ctx2, actionKey, "ctxerr"))
	wantCode(t, err, codes.Canceled, "")
	for _, code := range []codes.Code{codes.DeadlineExceeded, codes.Canceled} {
		var n uint64
		for deadline := time.Now().Add(5 * time.Second); n == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			n = rec.HistogramCount(t, semconv.RPCServerCallDuration, attribute.Int(semconv.AttrRPCGRPCStatusCode, int(code)))
		}
		if n != 1 {
			t.Errorf("calls recorded with %v: %d, want 1", code, n)
		}
	}
	if n := rec.HistogramCount(t, semconv.RPCServerCallDuration, attribute.Int(semconv.AttrRPCGRPCStatusCode, int(codes.Unknown))); n != 0 {
		t.Errorf("%d calls recorded as UNKNOWN", n)
	}
}

// A stream lives as long as its caller wants: no deadline of GRPC_REQUEST_TIMEOUT's, and its
// shedder slot is given back once admitted, so a unary call is admitted beside an open stream with
// a limit of 1.
func TestStreamsHaveNoDeadlineAndHoldNoSlot(t *testing.T) {
	s, err := guard.NewShedder(guard.ShedConfig{InitialLimit: 1, MinLimit: 1, MaxLimit: 1})
	if err != nil {
		t.Fatal(err)
	}
	svc := &testService{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	c := serve(t, svc, []grpcx.Option{grpcx.WithShedder(s), grpcx.WithRequestTimeout(time.Second)})
	ctx := context.Background()
	st, err := c.StreamingOutputCall(with(ctx, actionKey, "deadline"), &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := st.Recv(); err != nil || string(res.GetPayload().GetBody()) != "false" {
		t.Fatalf("stream's deadline: %v %v, want none", res, err)
	}
	if got, err := call(t, c, with(ctx, actionKey, "deadline")); err != nil || got != "1s" {
		t.Fatalf("a unary call's deadline: %q %v, want the 1s cap", got, err)
	}
	blocked, err := c.StreamingOutputCall(with(ctx, actionKey, "block"), &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatal(err)
	}
	<-svc.entered
	if _, err := call(t, c, ctx); err != nil {
		t.Fatalf("a unary call beside an open stream, limit 1: %v", err)
	}
	close(svc.block)
	if _, err := blocked.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v", err)
	}
	if s.Inflight() != 0 {
		t.Fatalf("%d in flight after every call ended", s.Inflight())
	}
}

// With an UnknownServiceHandler, callers choose method names: past the method table's size, their
// series and spans are named _OTHER, so that the number of series stays bounded.
func TestCallerChosenMethodsAreBounded(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{ServiceName: "svc"})
	chain, err := grpcx.NewInterceptors(grpcx.WithMeterProvider(tel.MeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = chain.Close() })
	srv := grpc.NewServer(grpc.ChainStreamInterceptor(chain.Stream()),
		grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
			var in emptypb.Empty
			if err := ss.RecvMsg(&in); err != nil {
				return err
			}
			return ss.SendMsg(&emptypb.Empty{})
		}))
	conn := start(t, srv)
	grpcx.SetMaxMethods(t, 20)
	const n = 20 + 5
	for i := range n {
		if err := conn.Invoke(context.Background(), fmt.Sprintf("/any.Service/M%d", i), &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if got := rec.HistogramCount(t, semconv.RPCServerCallDuration, attribute.String(semconv.AttrRPCMethod, "_OTHER")); got != 5 {
		t.Errorf("%d calls beyond the table recorded as _OTHER, want 5", got)
	}
	if got := rec.HistogramCount(t, semconv.RPCServerCallDuration, attribute.String(semconv.AttrRPCMethod, "M7")); got != 1 {
		t.Errorf("a method within the table: %d calls recorded under its name, want 1", got)
	}
}
