package bench

// gRPC client call overhead: one unary grpc.health.v1.Health/Check over bufconn (in-memory
// connections, so the client stacks' own cost dominates), through:
//   - bare grpc-go: grpc.NewClient with one connection, no interceptors;
//   - Chassis: grpcclient (P2C over 1 and 3 instances, dependency and instance breakers, retry with
//     budget, attempt timeout, span and rpc.client.call.duration recorded by the OTel SDK into a
//     manual reader), with the method declared idempotent.
//
//	cd bench && go test -run '^$' -bench GRPCClient -benchmem -count 6

import (
	"context"
	"net"
	"strconv"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/test/bufconn"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
)

// bufServers starts n health servers on bufconn listeners named "inst-<i>:1" and returns a dial
// option that reaches them by address.
func bufServers(b *testing.B, n int) ([]discovery.Instance, grpc.DialOption) {
	lns := map[string]*bufconn.Listener{}
	var insts []discovery.Instance
	for i := range n {
		ln := bufconn.Listen(1 << 20)
		srv := grpc.NewServer()
		healthpb.RegisterHealthServer(srv, health.NewServer())
		go func() { _ = srv.Serve(ln) }()
		b.Cleanup(srv.Stop)
		inst := discovery.Instance{ID: "inst-" + strconv.Itoa(i), Address: "inst-" + strconv.Itoa(i), Port: 1}
		lns[inst.HostPort()] = ln
		insts = append(insts, inst)
	}
	return insts, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return lns[addr].DialContext(ctx)
	})
}

func benchCheck(b *testing.B, conn *grpc.ClientConn) {
	hc := healthpb.NewHealthClient(conn)
	ctx := context.Background()
	req := &healthpb.HealthCheckRequest{}
	if _, err := hc.Check(ctx, req); err != nil { // connected before the clock starts
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := hc.Check(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGRPCClientBare(b *testing.B) {
	insts, dialer := bufServers(b, 1)
	conn, err := grpc.NewClient("passthrough:///"+insts[0].HostPort(), dialer,
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	benchCheck(b, conn)
}

func BenchmarkGRPCClientChassis(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(strconv.Itoa(n)+"-instances", func(b *testing.B) { benchChassis(b, n) })
	}
}

func benchChassis(b *testing.B, n int) {
	insts, dialer := bufServers(b, n)
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	c, err := grpcclient.New("svc", discovery.NewStatic("svc", insts),
		grpcclient.WithDialOptions(dialer), grpcclient.WithMeterProvider(mp),
		grpcclient.WithIdempotent("/grpc.health.v1.Health/Check"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	benchCheck(b, c.Conn())
}
