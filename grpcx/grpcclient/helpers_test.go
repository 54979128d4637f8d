package grpcclient_test

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/discoverytest"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
	"github.com/cloudchassis/kit/resilience"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	checkMethod = "/grpc.health.v1.Health/Check"
	watchMethod = "/grpc.health.v1.Health/Watch"
)

// backend is a plain grpc-go server on loopback serving grpc.health.v1.Health, whose Check runs
// the behaviour the test sets.
type backend struct {
	*health.Server
	name    string
	srv     *grpc.Server
	addr    string
	ln      net.Listener
	port    int
	calls   atomic.Int64
	streams atomic.Int64
	behave  atomic.Pointer[func(context.Context) error]
	last    atomic.Pointer[metadata.MD]
	dl      atomic.Int64 // remaining deadline of the last call, in ns (0: none)
}

func (b *backend) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	b.calls.Add(1)
	md, _ := metadata.FromIncomingContext(ctx)
	b.last.Store(&md)
	if dl, ok := ctx.Deadline(); ok {
		b.dl.Store(int64(time.Until(dl)))
	}
	if f := b.behave.Load(); f != nil && *f != nil {
		if err := (*f)(ctx); err != nil {
			return nil, err
		}
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func (b *backend) set(f func(context.Context) error) { b.behave.Store(&f) }

func (b *backend) instance() discovery.Instance {
	return discovery.Instance{ID: b.name, Address: "127.0.0.1", Port: b.port}
}

// startBackend serves on a fresh loopback port until the test ends.
func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := newUnstartedBackend(t, name)
	b.serve(t)
	return b
}

// newUnstartedBackend makes a backend with Health registered, on a fresh loopback port; register
// more services on b.srv, then serve.
func newUnstartedBackend(t *testing.T, name string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{Server: health.NewServer(), name: name, addr: ln.Addr().String(), ln: ln,
		port: ln.Addr().(*net.TCPAddr).Port}
	b.srv = grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		b.streams.Add(1)
		return h(srv, ss)
	}))
	healthpb.RegisterHealthServer(b.srv, b)
	return b
}

// serve serves b until the test ends.
func (b *backend) serve(t *testing.T) {
	done := make(chan struct{})
	go func() { defer close(done); _ = b.srv.Serve(b.ln) }()
	t.Cleanup(func() { b.srv.Stop(); <-done })
}

func startBackends(t *testing.T, n int) []*backend {
	out := make([]*backend, n)
	for i := range out {
		out[i] = startBackend(t, "b"+strconv.Itoa(i))
	}
	return out
}

// newClient makes a started client of "svc" over the registry, closed when the test ends.
func newClient(t *testing.T, reg *discoverytest.Registry, opts ...grpcclient.Option) *grpcclient.Client {
	t.Helper()
	c, err := grpcclient.New("svc", reg.Watcher("svc"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// setup starts n backends, registers them as "svc" and returns a started client of them.
func setup(t *testing.T, n int, opts ...grpcclient.Option) (*grpcclient.Client, []*backend, *discoverytest.Registry) {
	t.Helper()
	bs := startBackends(t, n)
	reg := discoverytest.NewRegistry()
	register(reg, bs...)
	return newClient(t, reg, opts...), bs, reg
}

func register(reg *discoverytest.Registry, bs ...*backend) {
	insts := make([]discovery.Instance, len(bs))
	for i, b := range bs {
		insts[i] = b.instance()
	}
	reg.Set("svc", insts...)
}

// checkN makes n calls that must all succeed.
func checkN(t *testing.T, ctx context.Context, c *grpcclient.Client, n int) {
	t.Helper()
	for i := range n {
		if err := check(ctx, c); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
}

func check(ctx context.Context, c *grpcclient.Client, opts ...grpc.CallOption) error {
	_, err := healthpb.NewHealthClient(c.Conn()).Check(ctx, &healthpb.HealthCheckRequest{}, opts...)
	return err
}

// quick is a resilience config with short delays, for tests.
func quick() resilience.Config {
	cfg := resilience.DefaultConfig()
	cfg.RetryBaseDelay = time.Millisecond
	cfg.RetryMaxDelay = 5 * time.Millisecond
	cfg.BreakerDelay = time.Minute
	return cfg
}

func calls(bs ...*backend) []int64 {
	out := make([]int64, len(bs))
	for i, b := range bs {
		out[i] = b.calls.Load()
	}
	return out
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// muteListener accepts TCP connections on loopback and never speaks: a gRPC connection to it stays
// CONNECTING. It returns the port; the listener and its connections close when the test ends.
func muteListener(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		held []net.Conn
	)
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-accepted
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}
