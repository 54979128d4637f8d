// Command rolling is a test service for the gRPC rolling restart tests (grpc_rolling_test.go): it
// serves rollingtest.Rolling on its gRPC server, whose Get and Put work for the duration the
// request names (within the call's context) and answer the instance's gRPC address. The test's
// client declares Get idempotent through the method's proto descriptor (idempotency_level), Put
// not; the server needs no descriptor.
package main

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cloudchassis/kit/chassis"
)

func main() {
	chassis.Main("rolling", func(svc *chassis.Service) error {
		work := func(_ any, ctx context.Context, dec func(any) error, in grpc.UnaryServerInterceptor) (any, error) {
			req := new(durationpb.Duration)
			if err := dec(req); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, req any) (any, error) {
				t := time.NewTimer(req.(*durationpb.Duration).AsDuration())
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				return wrapperspb.String(svc.GRPCAddr()), nil
			}
			if in == nil {
				return h(ctx, req)
			}
			method, _ := grpc.Method(ctx)
			return in(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, h)
		}
		svc.GRPC().RegisterService(&grpc.ServiceDesc{ServiceName: "rollingtest.Rolling", HandlerType: (*any)(nil),
			Methods: []grpc.MethodDesc{{MethodName: "Get", Handler: work}, {MethodName: "Put", Handler: work}}}, nil)
		return nil
	})
}
