package chassis_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/internal/consultest"
	"github.com/cloudchassis/kit/internal/syncbuf"
	"github.com/cloudchassis/kit/internal/toolpath"
)

// grpcService answers UnaryCall with the caller's principal and request id, and blocks while
// hold is open when the request asks for it (ResponseSize 1).
type grpcService struct {
	testgrpc.UnimplementedTestServiceServer
	entered chan struct{}
	hold    chan struct{}
}

func (g *grpcService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if req.GetResponseSize() == 1 {
		g.entered <- struct{}{}
		select {
		case <-g.hold:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	who := "anonymous"
	if p, ok := auth.PrincipalFrom(ctx); ok {
		who = p.Method + ":" + p.Subject
	}
	return &testgrpc.SimpleResponse{Username: who, ServerId: chassis.RequestID(ctx)}, nil
}

func newGRPCService(t *testing.T, kv ...string) (*chassis.Service, *grpcService) {
	t.Helper()
	svc, err := chassis.New("pricing", chassis.WithEnv(env(kv...)), chassis.WithoutSignals())
	if err != nil {
		t.Fatal(err)
	}
	g := &grpcService{entered: make(chan struct{}, 8), hold: make(chan struct{})}
	testgrpc.RegisterTestServiceServer(svc.GRPC(), g)
	return svc, g
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestGRPCServerOnlyWhenUsed(t *testing.T) {
	plain, err := chassis.New("web", chassis.WithEnv(env()), chassis.WithoutSignals())
	if err != nil {
		t.Fatal(err)
	}
	start(t, plain)
	if plain.GRPCAddr() != "" {
		t.Fatalf("a service that never called GRPC serves gRPC on %s", plain.GRPCAddr())
	}

	svc, _ := newGRPCService(t)
	start(t, svc)
	if svc.GRPCAddr() == "" || svc.GRPCAddr() == svc.Addr() {
		t.Fatalf("gRPC address %q (HTTP %q)", svc.GRPCAddr(), svc.Addr())
	}
	conn := dial(t, svc.GRPCAddr(), nil)
	res, err := testgrpc.NewTestServiceClient(conn).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
	if err != nil || res.GetUsername() != "anonymous" || len(res.GetServerId()) != 32 {
		t.Fatalf("call: %v %v", res, err)
	}
	hs, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "grpc.testing.TestService"})
	if err != nil || hs.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health of a ready service: %v %v", hs, err)
	}
}

// The drain, in order: gRPC health turns NOT_SERVING with /readyz at its very start, calls keep
// being served through DRAIN_DELAY, the call in progress completes during GracefulStop, and new
// calls fail once the server stopped.
func TestGRPCDrainOrder(t *testing.T) {
	svc, g := newGRPCService(t, "DRAIN_DELAY", "600ms", "SHUTDOWN_TIMEOUT", "10s")
	cancel, done := runReady(t, svc)
	conn := dial(t, svc.GRPCAddr(), nil)
	client := testgrpc.NewTestServiceClient(conn)
	watch, err := healthpb.NewHealthClient(conn).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := watch.Recv(); err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("ready: %v %v", res, err)
	}
	inflight := make(chan error, 1)
	go func() {
		_, err := client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{ResponseSize: 1})
		inflight <- err
	}()
	<-g.entered

	cancel() // SIGTERM
	t0 := time.Now()
	res, err := watch.Recv()
	if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("drain: %v %v", res, err)
	}
	if d := time.Since(t0); d > 300*time.Millisecond {
		t.Fatalf("NOT_SERVING %v after the drain began", d)
	}
	if r, _ := get(t, "http://"+svc.AdminAddr()+"/readyz", nil); r.StatusCode != 503 {
		t.Fatalf("/readyz during the drain: %d", r.StatusCode)
	}
	// Still serving during DRAIN_DELAY: GracefulStop has not begun.
	if _, err := client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("call during DRAIN_DELAY: %v", err)
	}
	// The Watch stream ends when the server stops, so that it does not hold GracefulStop.
	if _, err := watch.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("watch at stop: %v", err)
	}
	if d := time.Since(t0); d < 600*time.Millisecond {
		t.Fatalf("the server stopped %v into a 600ms DRAIN_DELAY", d)
	}
	close(g.hold) // the call in progress completes during GracefulStop
	if err := <-inflight; err != nil {
		t.Fatalf("in-flight call: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	_, err = client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("call after stop: %v", err)
	}
}

func TestGRPCShutdownDeadlineCutsCalls(t *testing.T) {
	svc, g := newGRPCService(t, "SHUTDOWN_TIMEOUT", "500ms")
	cancel, done := runReady(t, svc)
	defer close(g.hold)
	client := testgrpc.NewTestServiceClient(dial(t, svc.GRPCAddr(), nil))
	inflight := make(chan error, 1)
	go func() {
		_, err := client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{ResponseSize: 1})
		inflight <- err
	}()
	<-g.entered
	cancel()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), "gRPC calls in progress cut at shutdown deadline") {
		t.Fatalf("Run: %v", err)
	}
	if err := <-inflight; status.Code(err) != codes.Unavailable {
		t.Fatalf("cut call: %v", err)
	}
}

// The HTTP and gRPC servers drain at the same time: while a gRPC call outlives SHUTDOWN_TIMEOUT, the
// HTTP server has closed its listener and answers the request in flight.
func TestGRPCAndHTTPDrainTogether(t *testing.T) {
	svc, g := newGRPCService(t, "SHUTDOWN_TIMEOUT", "1500ms")
	entered := make(chan struct{})
	svc.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		time.Sleep(700 * time.Millisecond)
		io.WriteString(w, "done")
	})
	cancel, done := runReady(t, svc)
	defer close(g.hold)
	client := testgrpc.NewTestServiceClient(dial(t, svc.GRPCAddr(), nil))
	go func() { _, _ = client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{ResponseSize: 1}) }()
	<-g.entered // a gRPC call that never ends by itself
	type answer struct {
		body string
		err  error
	}
	httpDone := make(chan answer, 1)
	go func() {
		res, err := http.Get("http://" + svc.Addr() + "/slow")
		if err != nil {
			httpDone <- answer{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		httpDone <- answer{string(b), err}
	}()
	<-entered
	cancel()
	if a := <-httpDone; a.err != nil || a.body != "done" {
		t.Errorf("HTTP request in flight at shutdown: %q, %v; want it answered while gRPC drains", a.body, a.err)
	}
	// The public listener closed when the drain began, not after gRPC's: while the gRPC call still
	// holds its server, a new HTTP connection is refused.
	select {
	case err := <-done:
		t.Fatalf("Run returned before the gRPC call's deadline: %v", err)
	default:
	}
	if res, err := http.Get("http://" + svc.Addr() + "/slow"); err == nil {
		res.Body.Close()
		t.Errorf("a new HTTP request during the gRPC drain was served (%d): the public server had not begun its shutdown", res.StatusCode)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "gRPC calls in progress cut at shutdown deadline") {
		t.Fatalf("Run: %v", err)
	}
}

// With TLS_* set, the gRPC server uses the HTTP server's certificate and client verification.
func TestGRPCMutualTLS(t *testing.T) {
	ca, dir, caFile := newMesh(t, "mesh")
	server := ca.issue(t, "pricing").write(t, dir, "server")
	svc, _ := newGRPCService(t, "TLS_CERT_FILE", server.cert, "TLS_KEY_FILE", server.key, "TLS_CLIENT_CA_FILE", caFile)
	start(t, svc)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	client := ca.issue(t, "spiffe://mesh/shop")
	cert, err := tls.X509KeyPair(client.certPEM, client.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ok := dial(t, svc.GRPCAddr(), credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "pricing", Certificates: []tls.Certificate{cert}}))
	res, err := testgrpc.NewTestServiceClient(ok).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
	if err != nil || res.GetUsername() != "mtls:spiffe://mesh/shop" {
		t.Fatalf("with a client certificate: %v %v", res, err)
	}
	// Without a client certificate, or over plaintext: no call reaches a handler.
	for name, creds := range map[string]credentials.TransportCredentials{
		"no client certificate": credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: "pricing"}),
		"plaintext":             insecure.NewCredentials(),
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := testgrpc.NewTestServiceClient(dial(t, svc.GRPCAddr(), creds)).UnaryCall(ctx, &testgrpc.SimpleRequest{})
		cancel()
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// The instance advertises its gRPC port on its one Consul registration, as meta grpc_port.
func TestGRPCPortAdvertisedInConsul(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	agent := consultest.StartDev(t)
	svc, _ := newGRPCService(t, "CONSUL_HTTP_ADDR", agent.HTTPAddr, "DISCOVERY", "consul", "SERVICE_META", "zone:a")
	start(t, svc)
	entries, _, err := agent.Client.Health().Service("pricing", "", true, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("passing instances: %d, %v", len(entries), err)
	}
	meta := entries[0].Service.Meta
	_, port, _ := net.SplitHostPort(svc.GRPCAddr())
	if meta[chassis.MetaGRPCPort] != port || meta["zone"] != "a" || strconv.Itoa(entries[0].Service.Port) == port {
		t.Fatalf("meta %v, port %d; gRPC at %s", meta, entries[0].Service.Port, svc.GRPCAddr())
	}
}

// findTool looks on PATH, then in $(go env GOPATH)/bin, where scripts/install-grpc-tools.sh puts
// it. Without it the test fails in CI and is skipped, saying how to install it, elsewhere.
func findTool(t *testing.T, name string) string {
	t.Helper()
	if p := toolpath.Find(name); p != "" {
		return p
	}
	msg := name + " not found on PATH or in $(go env GOPATH)/bin: run scripts/install-grpc-tools.sh"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// probe runs grpc-health-probe against addr and returns its exit code.
func probe(t *testing.T, bin, addr string, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(bin, append([]string{"-addr", addr, "-connect-timeout", "2s", "-rpc-timeout", "2s"}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// A client no one here wrote, grpc-health-probe, sees the service SERVING when ready, NOT_SERVING
// (exit code 4) during its drain, and cannot connect (exit code 2) once it stopped; grpcurl lists
// the services through reflection when GRPC_REFLECTION=true.
func TestGRPCHealthProbe(t *testing.T) {
	bin := findTool(t, "grpc-health-probe")
	svc, _ := newGRPCService(t, "DRAIN_DELAY", "3s", "GRPC_REFLECTION", "true")
	cancel, done := runReady(t, svc)
	addr := svc.GRPCAddr()

	if code, out := probe(t, bin, addr); code != 0 || !strings.Contains(out, "SERVING") {
		t.Fatalf("ready: exit %d: %s", code, out)
	}
	if code, out := probe(t, bin, addr, "-service", "grpc.testing.TestService"); code != 0 {
		t.Fatalf("ready, per service: exit %d: %s", code, out)
	}
	if code, out := probe(t, bin, addr, "-service", "no.such.Service"); code != 3 {
		t.Fatalf("unknown service: exit %d: %s", code, out)
	}
	if grpcurl := toolpath.Find("grpcurl"); grpcurl != "" {
		out, err := exec.Command(grpcurl, "-plaintext", addr, "list").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "grpc.testing.TestService") || !strings.Contains(string(out), "grpc.health.v1.Health") {
			t.Fatalf("grpcurl list: %v: %s", err, out)
		}
		out, err = exec.Command(grpcurl, "-plaintext", "-d", `{"service":""}`, addr, "grpc.health.v1.Health/Check").CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"status": "SERVING"`) {
			t.Fatalf("grpcurl Check: %v: %s", err, out)
		}
	}

	cancel()
	var code int
	var out string
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if code, out = probe(t, bin, addr); code == 4 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code != 4 || !strings.Contains(out, "NOT_SERVING") {
		t.Fatalf("draining: exit %d: %s", code, out)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if code, out := probe(t, bin, addr); code != 2 {
		t.Fatalf("stopped: exit %d: %s", code, out)
	}
}

// Reflection is off unless GRPC_REFLECTION=true.
func TestGRPCReflectionOffByDefault(t *testing.T) {
	grpcurl := findTool(t, "grpcurl")
	svc, _ := newGRPCService(t)
	start(t, svc)
	out, err := exec.Command(grpcurl, "-plaintext", svc.GRPCAddr(), "list").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "server does not support the reflection API") {
		t.Fatalf("grpcurl list without reflection: %v: %s", err, out)
	}
}

// The gRPC chain takes its guards from the same environment as HTTP: AUTH_* (the health service
// needs no token), RATE_LIMIT_* per verified subject, GRPC_MAX_RECV_BYTES.
func TestGRPCProtectionFromEnvironment(t *testing.T) {
	key := newIssuerKey(t, "k1")
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, jwksDoc(key.jwk), 0o600); err != nil {
		t.Fatal(err)
	}
	svc, _ := newGRPCService(t, "AUTH_JWKS_FILE", file, "RATE_LIMIT_RPS", "1", "RATE_LIMIT_BURST", "2",
		"GRPC_MAX_RECV_BYTES", "1KiB")
	start(t, svc)
	conn := dial(t, svc.GRPCAddr(), nil)
	client := testgrpc.NewTestServiceClient(conn)
	call := func(tok string, req *testgrpc.SimpleRequest) (string, error) {
		ctx := context.Background()
		if tok != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
		}
		res, err := client.UnaryCall(ctx, req)
		return res.GetUsername(), err
	}
	if _, err := call("", &testgrpc.SimpleRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	hs, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || hs.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without a token: %v %v", hs, err)
	}
	alice, bob := key.token(t, "k1", "alice"), key.token(t, "k1", "bob")
	if who, err := call(alice, &testgrpc.SimpleRequest{}); err != nil || who != "jwt:alice" {
		t.Fatalf("alice: %q %v", who, err)
	}
	_, err = call(alice, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 2048)}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("over GRPC_MAX_RECV_BYTES: %v", err)
	}
	// The oversize message was refused before the chain: alice has one call of her burst left.
	if _, err := call(alice, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("alice's second call: %v", err)
	}
	if _, err := call(alice, &testgrpc.SimpleRequest{}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("alice over her burst: %v", err)
	}
	if who, err := call(bob, &testgrpc.SimpleRequest{}); err != nil || who != "jwt:bob" {
		t.Fatalf("bob keeps his own allowance: %q %v", who, err)
	}
}

// TestGRPCAccessLine: a call's access line is written by the telemetry's own appender (LogRPC),
// in the same JSON as the HTTP access line, with the request id and the call's trace ids.
func TestGRPCAccessLine(t *testing.T) {
	var logs syncbuf.Buffer
	svc, err := chassis.New("pricing", chassis.WithEnv(env("LOG_LEVEL", "info", "OTEL_TRACES_SAMPLER", "always_on",
		"OTEL_TRACES_EXPORTER", "none")), chassis.WithoutSignals(), chassis.WithLogOutput(&logs))
	if err != nil {
		t.Fatal(err)
	}
	testgrpc.RegisterTestServiceServer(svc.GRPC(), &grpcService{})
	start(t, svc)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-request-id", "req-42")
	if _, err := testgrpc.NewTestServiceClient(dial(t, svc.GRPCAddr(), nil)).UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	for deadline := time.Now().Add(5 * time.Second); line == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `"msg":"rpc"`) {
				if err := json.Unmarshal([]byte(l), &line); err != nil {
					t.Fatalf("access line %q: %v", l, err)
				}
			}
		}
	}
	if line == nil {
		t.Fatalf("no access line in:\n%s", logs.String())
	}
	if line["level"] != "info" || line["service"] != "pricing" || line["method"] != "/grpc.testing.TestService/UnaryCall" ||
		line["code"] != "OK" || line["request_id"] != "req-42" || line["remote"] == "" {
		t.Errorf("access line %v", line)
	}
	if tid, _ := line["trace_id"].(string); len(tid) != 32 {
		t.Errorf("access line without the call's trace id: %v", line)
	}
	if d, ok := line["duration"].(float64); !ok || d <= 0 || d > 5 {
		t.Errorf("duration %v, want seconds", line["duration"])
	}
}

// GRPC may be called while Run starts (it is safe for concurrent use): either Run serves the server
// or GRPC saw that Run had started, never a server half seen (the race detector checks the rest).
func TestGRPCConcurrentWithRun(t *testing.T) {
	for range 5 {
		svc, err := chassis.New("pricing", chassis.WithEnv(env()), chassis.WithoutSignals())
		if err != nil {
			t.Fatal(err)
		}
		made := make(chan *grpc.Server, 1)
		go func() { made <- svc.GRPC() }()
		start(t, svc)
		if srv := <-made; srv == nil {
			t.Fatal("GRPC returned no server")
		}
		if svc.GRPCAddr() != "" {
			conn := dial(t, svc.GRPCAddr(), nil)
			if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatalf("served gRPC server: %v", err)
			}
		}
	}
}
