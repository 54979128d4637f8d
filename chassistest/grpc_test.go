package chassistest_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/chassistest"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
)

const healthCheck = "/grpc.health.v1.Health/Check"

// grpcCluster starts three gRPC instances of pricing and a cart service whose gRPC client of
// pricing goes through faults.
func grpcCluster(t *testing.T) (*chassistest.Cluster, []*chassistest.GRPCServer, *chassistest.Instance, *grpc.ClientConn, *chassistest.GRPCFaults) {
	c := chassistest.NewCluster(t)
	var servers []*chassistest.GRPCServer
	for range 3 {
		servers = append(servers, c.ServeGRPC("pricing", func(s *grpc.Server) {
			healthpb.RegisterHealthServer(s, health.NewServer())
		}))
	}
	faults := chassistest.NewGRPCFaults()
	var conn *grpc.ClientConn
	cart := c.Start("cart", func(svc *chassis.Service) error {
		conn = svc.GRPCClient("pricing", chassis.WithGRPC(
			grpcclient.WithIdempotent(healthCheck),
			grpcclient.WithInterceptors(faults.Unary(), faults.Stream())))
		return nil
	})
	return c, servers, cart, conn, faults
}

func checkOnce(ctx context.Context, conn *grpc.ClientConn) error {
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestGRPCFaultsAreRetriedElsewhere(t *testing.T) {
	_, servers, cart, conn, faults := grpcCluster(t)
	faults.SetInstance(servers[0].Instance().ID, chassistest.GRPCFail(codes.Unavailable))
	faults.SetInstance(servers[1].Instance().ID, chassistest.GRPCUnreachable())
	ctx := t.Context()
	for i := range 30 {
		if err := checkOnce(ctx, conn); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if faults.Attempts() <= 30 {
		t.Fatalf("%d attempts for 30 calls: no faulted instance was tried", faults.Attempts())
	}
	if n := cart.HistogramCount(t, grpcclient.MetricCallDuration, attribute.String("rpc.method", "Check"),
		attribute.Int("rpc.grpc.status_code", 0)); n != 30 {
		t.Fatalf("rpc.client.call.duration counted %d successful calls, want 30", n)
	}
	var spans int
	for _, s := range cart.Spans() {
		if s.Name() == "grpc.health.v1.Health/Check" && s.SpanKind() == trace.SpanKindClient {
			spans++
		}
	}
	if spans != 30 {
		t.Fatalf("%d client spans for 30 calls", spans)
	}
}

func TestGRPCLatencyFaultHitsDeadline(t *testing.T) {
	_, _, _, conn, faults := grpcCluster(t)
	faults.Set(chassistest.GRPCLatency(time.Second))
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := checkOnce(ctx, conn)
	if took := time.Since(start); err == nil || took > 500*time.Millisecond {
		t.Fatalf("call with a 1s latency fault under a 100ms deadline: %v after %v", err, took)
	}
}

func TestGRPCKilledInstanceLosesNoCall(t *testing.T) {
	_, servers, _, conn, _ := grpcCluster(t)
	// Calls from two goroutines, one instance killed halfway: the connections it had are cut and
	// it stays registered, so the client must take it out by itself.
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			var err error
			for i := 0; i < 400 && err == nil; i++ {
				if i == 200 {
					servers[0].Kill()
				}
				err = checkOnce(t.Context(), conn)
			}
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
