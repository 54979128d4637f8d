package grpcx_test

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/cloudchassis/kit/grpcx"
)

// A gRPC server with the chassis chain and a health service that follows readiness.
func Example() {
	chain, err := grpcx.NewInterceptors() // add WithShedder, WithVerifier, WithLimiter, providers...
	if err != nil {
		panic(err)
	}
	defer chain.Close()
	srv := grpc.NewServer(append(grpcx.DefaultConfig().ServerOptions(),
		grpc.ChainUnaryInterceptor(chain.Unary()), grpc.ChainStreamInterceptor(chain.Stream()))...)
	testgrpc.RegisterTestServiceServer(srv, &testService{})
	var ready atomic.Bool // chassis passes its readiness probe's answer
	h := grpcx.NewHealth(func(context.Context) bool { return ready.Load() })
	h.Register(srv)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		panic(err)
	}
	defer conn.Close()

	ctx := context.Background()
	health := healthpb.NewHealthClient(conn)
	res, _ := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "grpc.testing.TestService"})
	fmt.Println("starting:", res.GetStatus())
	ready.Store(true)
	h.Update()
	res, _ = health.Check(ctx, &healthpb.HealthCheckRequest{})
	fmt.Println("ready:", res.GetStatus())

	var header metadata.MD
	out, err := testgrpc.NewTestServiceClient(conn).UnaryCall(
		metadata.AppendToOutgoingContext(ctx, grpcx.RequestIDKey, "order-42"),
		&testgrpc.SimpleRequest{}, grpc.Header(&header))
	fmt.Println(out.GetUsername(), err, header.Get(grpcx.RequestIDKey))
	// Output:
	// starting: NOT_SERVING
	// ready: SERVING
	// ok <nil> [order-42]
}
