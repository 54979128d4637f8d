package hello

import (
	"context"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// TestService is the gRPC method the gRPC benchmarks call: grpc.testing.TestService/UnaryCall
// (grpc-go's interop service, so that no generated code of ours is needed), answering with the
// request's payload.
type TestService struct {
	testgrpc.UnimplementedTestServiceServer
}

// UnaryCall echoes the request's payload.
func (TestService) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Username: "ok", Payload: req.GetPayload()}, nil
}

// ServeGRPC runs srv on addr until SIGTERM or SIGINT, then stops it gracefully.
func ServeGRPC(srv *grpc.Server, addr string) error {
	return serveUntilSignal(addr, srv.Serve, func() error {
		srv.GracefulStop()
		return nil
	})
}
