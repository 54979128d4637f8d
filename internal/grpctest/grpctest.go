// Package grpctest serves a gRPC server in process, over bufconn, for tests and benchmarks.
package grpctest

import (
	"context"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
)

// Serve serves srv over an in-memory listener and returns a client connection to it. stop closes
// the connection and stops the server.
func Serve(srv *grpc.Server, opts ...grpc.DialOption) (conn *grpc.ClientConn, stop func(), err error) {
	lis := bufconn.Listen(1 << 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	conn, err = grpc.NewClient("passthrough:///bufnet", append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts...)...)
	if err != nil {
		srv.Stop()
		<-done
		return nil, nil, err
	}
	return conn, func() {
		_ = conn.Close()
		srv.Stop()
		<-done
	}, nil
}
