package chassistest

import (
	"context"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
)

// A GRPCFault decides what happens to one attempt of a gRPC call on its way to next: pass it on
// (perhaps late), or fail it. It is the gRPC counterpart of Fault; GRPCFaults applies it.
type GRPCFault func(ctx context.Context, method string, next func(context.Context) error) error

// GRPCLatency delays the attempt by d, then passes it on; if the attempt's context ends first, it
// fails with DEADLINE_EXCEEDED or CANCELLED, as gRPC would.
func GRPCLatency(d time.Duration) GRPCFault {
	return func(ctx context.Context, _ string, next func(context.Context) error) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return next(ctx)
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// GRPCFail answers in the instance's place with code, as if the server had returned it.
func GRPCFail(code codes.Code) GRPCFault {
	return func(context.Context, string, func(context.Context) error) error {
		return status.Error(code, "chassistest: injected "+code.String())
	}
}

// GRPCUnreachable fails the attempt at once as UNAVAILABLE, never sent (grpcclient.NotSent), as
// when no connection to the instance exists: the client may retry it elsewhere for any method.
func GRPCUnreachable() GRPCFault {
	return func(context.Context, string, func(context.Context) error) error {
		return grpcclient.NotSent(status.Error(codes.Unavailable, "chassistest: instance unreachable"))
	}
}

// GRPCBlackhole never answers: the attempt hangs until its context ends.
func GRPCBlackhole() GRPCFault {
	return func(ctx context.Context, _ string, _ func(context.Context) error) error {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
}

// GRPCSometimes applies f to each attempt with probability p (0 to 1), from a generator seeded
// with seed, and passes the others on.
func GRPCSometimes(p float64, seed uint64, f GRPCFault) GRPCFault {
	var mu sync.Mutex
	r := rand.New(rand.NewPCG(seed, seed))
	return func(ctx context.Context, method string, next func(context.Context) error) error {
		mu.Lock()
		hit := r.Float64() < p
		mu.Unlock()
		if hit {
			return f(ctx, method, next)
		}
		return next(ctx)
	}
}

// GRPCFaults injects faults into the attempts of chassis gRPC clients, per instance or for all:
// install it with chassis.WithGRPC(grpcclient.WithInterceptors(f.Unary(), f.Stream())) (in a
// chassis.WithClientDefaults to reach every dependency). Its interceptors run below the client's
// policies, once per attempt, after the balancer chose the instance, so retries, breakers and
// outlier ejection see the faults as they would see a real failure. Safe for concurrent use.
type GRPCFaults struct {
	mu       sync.RWMutex
	all      GRPCFault
	byID     map[string]GRPCFault
	attempts atomic.Int64
}

// NewGRPCFaults returns a GRPCFaults that lets every attempt through.
func NewGRPCFaults() *GRPCFaults { return &GRPCFaults{byID: map[string]GRPCFault{}} }

// Set makes f the fault of attempts to every instance without a fault of its own; nil lets them
// through.
func (f *GRPCFaults) Set(fault GRPCFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.all = fault
}

// SetInstance makes fault the fault of attempts to the instance id (its discovery id); nil removes
// it.
func (f *GRPCFaults) SetInstance(id string, fault GRPCFault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fault == nil {
		delete(f.byID, id)
		return
	}
	f.byID[id] = fault
}

// Attempts returns how many attempts passed through, faulted or not.
func (f *GRPCFaults) Attempts() int { return int(f.attempts.Load()) }

func (f *GRPCFaults) fault(ctx context.Context) GRPCFault {
	f.attempts.Add(1)
	id, _ := grpcclient.Instance(ctx)
	f.mu.RLock()
	defer f.mu.RUnlock()
	if g, ok := f.byID[id]; ok {
		return g
	}
	return f.all
}

// Unary returns the interceptor for unary calls.
func (f *GRPCFaults) Unary() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		next := func(ctx context.Context) error { return invoker(ctx, method, req, reply, cc, opts...) }
		if g := f.fault(ctx); g != nil {
			return g(ctx, method, next)
		}
		return next(ctx)
	}
}

// Stream returns the interceptor for streams: the fault runs before the stream opens.
func (f *GRPCFaults) Stream() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		var cs grpc.ClientStream
		next := func(ctx context.Context) (err error) { cs, err = streamer(ctx, desc, cc, method, opts...); return err }
		g := f.fault(ctx)
		if g == nil {
			g = func(ctx context.Context, _ string, next func(context.Context) error) error { return next(ctx) }
		}
		if err := g(ctx, method, next); err != nil {
			return nil, err
		}
		return cs, nil
	}
}

// GRPCServer is a plain gRPC server serving on loopback for one test, registered in a Cluster's
// registry under a service name (ServeGRPC).
type GRPCServer struct {
	// Server is the gRPC server; register services on it in ServeGRPC's register function.
	Server   *grpc.Server
	instance discovery.Instance
	done     chan struct{}
	stop     sync.Once
	c        *Cluster
	name     string
}

// ServeGRPC starts a gRPC server on a loopback port, with the services register adds, and
// registers it in the cluster as an instance of name with its port also in the grpc_port metadata,
// as chassis registers a gRPC service: the gRPC clients (Service.GRPCClient) of the cluster's
// services find it. It stops when the test ends, or at Stop.
func (c *Cluster) ServeGRPC(name string, register func(*grpc.Server), opts ...grpc.ServerOption) *GRPCServer {
	c.tb.Helper()
	return serveGRPC(c.tb, c, name, register, opts)
}

func serveGRPC(tb testing.TB, c *Cluster, name string, register func(*grpc.Server), opts []grpc.ServerOption) *GRPCServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("chassistest: grpc listener: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	s := &GRPCServer{Server: grpc.NewServer(opts...), done: make(chan struct{}), c: c, name: name,
		instance: discovery.Instance{ID: name + "-grpc-" + strconv.Itoa(port), Address: "127.0.0.1", Port: port,
			Meta: map[string]string{grpcclient.MetaPort: strconv.Itoa(port)}}}
	if register != nil {
		register(s.Server)
	}
	go func() { defer close(s.done); _ = s.Server.Serve(ln) }()
	c.registry.Add(name, s.instance)
	tb.Cleanup(s.Stop)
	return s
}

// Instance returns the instance the server is registered as.
func (s *GRPCServer) Instance() discovery.Instance { return s.instance }

// Deregister removes the server from the registry; it keeps serving (a drain).
func (s *GRPCServer) Deregister() { s.c.registry.Remove(s.name, s.instance.ID) }

// Kill stops the server at once, cutting its connections and failing the calls in flight, and
// leaves it registered, as a killed process stays in a registry until its health check fails.
func (s *GRPCServer) Kill() {
	s.stop.Do(func() {
		s.Server.Stop()
		<-s.done
	})
}

// Stop deregisters the server, then stops it at once.
func (s *GRPCServer) Stop() {
	s.Deregister()
	s.Kill()
}
