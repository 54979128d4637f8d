package chassis_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/internal/consultest"
)

// grpcBackend is a plain grpc-go health server; fail makes its Check answer UNAVAILABLE.
type grpcBackend struct {
	*health.Server
	calls  atomic.Int64
	fail   atomic.Bool
	lastID atomic.Value // x-request-id of the last call
	peerID atomic.Value // the client certificate's identity, with mutual TLS
}

func (b *grpcBackend) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	b.calls.Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	b.lastID.Store(strings.Join(md.Get("x-request-id"), ","))
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			b.peerID.Store(auth.CertIdentity(ti.State.VerifiedChains[0][0]))
		}
	}
	if b.fail.Load() {
		return nil, status.Error(codes.Unavailable, "down")
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// serveGRPC serves a grpcBackend on addr ("127.0.0.1:0") until the test ends.
func serveGRPC(t *testing.T, addr string, opts ...grpc.ServerOption) (*grpcBackend, string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	b := &grpcBackend{Server: health.NewServer()}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, b)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return b, ln.Addr().String()
}

// TestGRPCClientStaticListWithGRPCPort: the static list names the instances' HTTP addresses and
// CLIENT_<NAME>_GRPC_PORT the port they serve gRPC on; an idempotent method declared in the
// environment is retried past the failing instance, and a handler's request id travels.
func TestGRPCClientStaticListWithGRPCPort(t *testing.T) {
	bad, addr := serveGRPC(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(addr)
	good, _ := serveGRPC(t, "127.0.0.2:"+port)
	bad.fail.Store(true)
	svc, err := chassis.New("caller", chassis.WithEnv(env(
		"DISCOVERY_STATIC_PRICING", "127.0.0.1:8080,127.0.0.2:8080",
		"CLIENT_PRICING_GRPC_PORT", port,
		"CLIENT_PRICING_GRPC_IDEMPOTENT", "/grpc.health.v1.Health/Check")))
	if err != nil {
		t.Fatal(err)
	}
	conn := svc.GRPCClient("pricing")
	if svc.GRPCClient("pricing") != conn {
		t.Fatal("GRPCClient is not cached by name")
	}
	hc := healthpb.NewHealthClient(conn)
	svc.HandleFunc("GET /check", func(w http.ResponseWriter, r *http.Request) {
		if _, err := hc.Check(r.Context(), &healthpb.HealthCheckRequest{}); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	})
	start(t, svc)
	for i := range 20 {
		req, _ := http.NewRequest("GET", "http://"+svc.Addr()+"/check", nil)
		req.Header.Set("X-Request-Id", "req-"+strconv.Itoa(i))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("call %d: %d", i, resp.StatusCode)
		}
		if got := good.lastID.Load(); got != "req-"+strconv.Itoa(i) && bad.lastID.Load() != "req-"+strconv.Itoa(i) {
			t.Fatalf("x-request-id %q, want req-%d", got, i)
		}
	}
	if bad.calls.Load() == 0 || good.calls.Load() < 20 {
		t.Fatalf("calls: failing %d, healthy %d", bad.calls.Load(), good.calls.Load())
	}
}

// TestGRPCClientClosedAtStop: the connection lives from Run's start to its end.
func TestGRPCClientClosedAtStop(t *testing.T) {
	_, addr := serveGRPC(t, "127.0.0.1:0")
	svc, err := chassis.New("caller", chassis.WithEnv(env("DISCOVERY_STATIC_PRICING", addr)))
	if err != nil {
		t.Fatal(err)
	}
	conn := svc.GRPCClient("pricing")
	cancel, done := runReady(t, svc)
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s := conn.GetState(); s != connectivity.Shutdown {
		t.Fatalf("connection %v after the stop, want SHUTDOWN", s)
	}
}

func TestGRPCClientBadVariableFailsRun(t *testing.T) {
	svc, err := chassis.New("caller", chassis.WithEnv(env("DISCOVERY_STATIC_PRICING", "127.0.0.1:1",
		"CLIENT_PRICING_GRPC_PORT", "grpc")))
	if err != nil {
		t.Fatal(err)
	}
	conn := svc.GRPCClient("pricing")
	err = svc.Run(context.Background())
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "CLIENT_PRICING_GRPC_PORT") {
		t.Fatalf("Run = %v", err)
	}
	_, err = healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "CLIENT_PRICING_GRPC_PORT") {
		t.Fatalf("call through an unusable client: %v", err)
	}
}

// TestGRPCClientMutualTLS: CLIENT_TLS_* become the connection's credentials; the server verifies
// the client's certificate, the client the server's name; a client that does not trust the
// server's CA fails with UNAVAILABLE.
func TestGRPCClientMutualTLS(t *testing.T) {
	dir := t.TempDir()
	meshCA, otherCA := newTestCA(t, "mesh CA"), newTestCA(t, "partner CA")
	meshBundle, otherBundle := filepath.Join(dir, "mesh.pem"), filepath.Join(dir, "other.pem")
	writeAtomic(t, meshBundle, bundle(meshCA))
	writeAtomic(t, otherBundle, bundle(otherCA))
	l := meshCA.issue(t, "pricing")
	cert, err := tls.X509KeyPair(l.certPEM, l.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(meshCA.cert)
	b, addr := serveGRPC(t, "127.0.0.1:0", grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})))
	gw := meshCA.issue(t, "spiffe://mesh.test/gateway").write(t, dir, "gateway")

	call := func(ca string) error {
		svc, err := chassis.New("gateway", chassis.WithEnv(env("DISCOVERY_STATIC_PRICING", addr,
			"CLIENT_TLS_ENABLED", "true", "CLIENT_TLS_CA_FILE", ca,
			"CLIENT_TLS_CERT_FILE", gw.cert, "CLIENT_TLS_KEY_FILE", gw.key, "CLIENT_PRICING_RETRIES", "0")))
		if err != nil {
			t.Fatal(err)
		}
		conn := svc.GRPCClient("pricing")
		start(t, svc)
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	if err := call(meshBundle); err != nil {
		t.Fatal(err)
	}
	if id := b.peerID.Load(); id != "spiffe://mesh.test/gateway" {
		t.Fatalf("server saw client identity %v", id)
	}
	if err := call(otherBundle); status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a client that does not trust the server: %v", err)
	}
}

// TestGRPCClientOverConsul runs against a real Consul agent: an instance registered with its gRPC
// port in the grpc_port meta (its registered port is the HTTP one) is found and called; the HTTP
// client of the same name shares the watch.
func TestGRPCClientOverConsul(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	agent := consultest.StartDev(t)
	b, addr := serveGRPC(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(addr)
	if err := agent.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "pricing-1", Name: "pricing",
		Address: "127.0.0.1", Port: 8080, Meta: map[string]string{"grpc_port": port}}); err != nil {
		t.Fatal(err)
	}
	svc, err := chassis.New("shop", chassis.WithEnv(env("CONSUL_HTTP_ADDR", agent.HTTPAddr, "DISCOVERY", "consul",
		"REGISTER", "false")))
	if err != nil {
		t.Fatal(err)
	}
	_ = svc.Client("pricing")
	conn := svc.GRPCClient("pricing")
	start(t, svc)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if b.calls.Load() != 1 {
		t.Fatalf("%d calls reached the instance", b.calls.Load())
	}
}

// TestTaskCallsGRPCDependency: a task reaches a gRPC dependency through svc.GRPCClient, declared
// before the task or inside it, and the service's own gRPC server is not served meanwhile.
func TestTaskCallsGRPCDependency(t *testing.T) {
	b, addr := serveGRPC(t, "127.0.0.1:0")
	svc, err := chassis.New("reindexer", chassis.WithoutSignals(), chassis.WithEnv(env(
		"DISCOVERY_STATIC_PRICING", addr, "DISCOVERY_STATIC_CATALOG", addr, "GRPC_PORT", "0")))
	if err != nil {
		t.Fatal(err)
	}
	_ = svc.GRPC() // a service that serves gRPC (its health service at least)
	pricing := healthpb.NewHealthClient(svc.GRPCClient("pricing"))
	svc.Task("reindex", "read prices", func(ctx context.Context, _ []string) error {
		if svc.GRPCAddr() != "" {
			return errors.New("the gRPC server is served during a task: " + svc.GRPCAddr())
		}
		if _, err := pricing.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			return err
		}
		_, err := healthpb.NewHealthClient(svc.GRPCClient("catalog")).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := svc.RunTask(ctx, "reindex", nil); err != nil {
		t.Fatal(err)
	}
	if n := b.calls.Load(); n != 2 {
		t.Errorf("the dependency saw %d calls, want 2", n)
	}
}
