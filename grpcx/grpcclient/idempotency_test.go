package grpcclient_test

import (
	"context"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/cloudchassis/kit/discovery/discoverytest"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
)

// registerIdemProto registers, once per process, the descriptor of a service whose proto marks
// Get idempotent and Put not, as generated code would:
//
//	service Idem {
//	  rpc Get(grpc.health.v1.HealthCheckRequest) returns (grpc.health.v1.HealthCheckResponse) {
//	    option idempotency_level = IDEMPOTENT;
//	  }
//	  rpc Put(grpc.health.v1.HealthCheckRequest) returns (grpc.health.v1.HealthCheckResponse);
//	}
func registerIdemProto(t *testing.T) {
	if _, err := protoregistry.GlobalFiles.FindDescriptorByName("grpcclienttest.Idem"); err == nil {
		return
	}
	method := func(name string, opts *descriptorpb.MethodOptions) *descriptorpb.MethodDescriptorProto {
		return &descriptorpb.MethodDescriptorProto{Name: proto.String(name), Options: opts,
			InputType:  proto.String(".grpc.health.v1.HealthCheckRequest"),
			OutputType: proto.String(".grpc.health.v1.HealthCheckResponse")}
	}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name:       proto.String("grpcclienttest/idem.proto"),
		Package:    proto.String("grpcclienttest"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{healthpb.File_grpc_health_v1_health_proto.Path()},
		Service: []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("Idem"), Method: []*descriptorpb.MethodDescriptorProto{
			method("Get", &descriptorpb.MethodOptions{IdempotencyLevel: descriptorpb.MethodOptions_IDEMPOTENT.Enum()}),
			method("Put", nil),
		}}},
	}, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	if err := protoregistry.GlobalFiles.RegisterFile(fd); err != nil {
		t.Fatal(err)
	}
}

// idemServer serves grpcclienttest.Idem: each method fails its first call with UNAVAILABLE.
func idemServer(b *backend) *atomic.Int64 {
	var calls atomic.Int64
	handler := func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		in := new(healthpb.HealthCheckRequest)
		if err := dec(in); err != nil {
			return nil, err
		}
		if calls.Add(1) == 1 {
			return nil, status.Error(codes.Unavailable, "first call fails")
		}
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	}
	b.srv.RegisterService(&grpc.ServiceDesc{ServiceName: "grpcclienttest.Idem", HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Get", Handler: handler}, {MethodName: "Put", Handler: handler}}}, nil)
	return &calls
}

func TestProtoIdempotencyLevelIsHonoured(t *testing.T) {
	registerIdemProto(t)
	for _, tc := range []struct {
		method string
		retry  bool
	}{{"/grpcclienttest.Idem/Get", true}, {"/grpcclienttest.Idem/Put", false}} {
		t.Run(tc.method, func(t *testing.T) {
			b := newUnstartedBackend(t, "b0")
			calls := idemServer(b)
			b.serve(t)
			reg := discoverytest.NewRegistry()
			register(reg, b)
			c := newClient(t, reg, grpcclient.WithResilience(quick()), grpcclient.WithBalancer(lb.WithOutlier(lb.Outlier{})))
			err := c.Conn().Invoke(ctxT(t), tc.method, &healthpb.HealthCheckRequest{}, new(healthpb.HealthCheckResponse))
			if tc.retry && (err != nil || calls.Load() != 2) {
				t.Fatalf("idempotent by its proto: %v after %d calls, want success after 2", err, calls.Load())
			}
			if !tc.retry && (status.Code(err) != codes.Unavailable || calls.Load() != 1) {
				t.Fatalf("not idempotent: %v after %d calls, want UNAVAILABLE after 1", err, calls.Load())
			}
		})
	}
}
