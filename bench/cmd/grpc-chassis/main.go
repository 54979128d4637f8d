// Command grpc-chassis is the gRPC method of the TCP benchmark (../../tcp -grpc),
// grpc.testing.TestService/UnaryCall, on a Chassis service's gRPC server (svc.GRPC(): its whole
// default interceptor chain), configured entirely by the environment as in production (GRPC_PORT,
// ACCESS_LOG, OTEL_*; see the README's reference).
package main

import (
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/cloudchassis/kit/bench/internal/hello"
	"github.com/cloudchassis/kit/chassis"
)

func main() {
	chassis.Main("hello", func(svc *chassis.Service) error {
		testgrpc.RegisterTestServiceServer(svc.GRPC(), hello.TestService{})
		return nil
	})
}
