package bench

// gRPC client call overhead: one unary grpc.health.v1.Health/Check over bufconn (in-memory
// connections, so the client stacks' own cost dominates) against the same bare health server(s),
// through:
//   - bare: grpc.NewClient with one connection, no interceptors;
//   - otelgrpc: the same with otelgrpc's client stats handler (span sampled and exported to a
//     discarding batch exporter, metrics into a manual reader);
//   - chassis: grpcclient (P2C over 1 and 3 instances, dependency and instance breakers, retry with
//     budget, attempt timeout, a sampled span and rpc.client.call.duration on the same providers),
//     with the method declared idempotent;
//   - kratos: kratos/v2/transport/grpc.DialInsecure with the client middleware of Kratos' layout
//     (tracing on the same tracer provider, metrics on the same meter provider, the SRE circuit
//     breaker) and its default "selector" balancer (weighted round robin);
//   - gozero: zrpc.NewClient with a direct target and go-zero's default client middlewares (trace,
//     duration, Prometheus, breaker, 2 s timeout) and its p2c_ewma balancer; its trace interceptor
//     uses the global tracer provider, which the row sets to the same sampled provider and restores.
//
// Besides ns/op each row reports cpu-ns/op (process CPU time per call: client and server, GC
// included); on a shared machine compare the cpu-ns/op ratios.
//
//	cd bench && go test -run '^$' -bench GRPCClient -benchmem -count 6

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/go-kratos/kratos/v2/middleware/circuitbreaker"
	kmetrics "github.com/go-kratos/kratos/v2/middleware/metrics"
	ktracing "github.com/go-kratos/kratos/v2/middleware/tracing"
	kgrpc "github.com/go-kratos/kratos/v2/transport/grpc"
	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/zrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
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

// benchCalls times call in a b.Loop loop after one untimed call (which connects), reporting
// allocations and cpu-ns/op.
func benchCalls(b *testing.B, call func(context.Context) error) {
	ctx := context.Background()
	if err := call(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	defer telCPU(b)()
	for b.Loop() {
		if err := call(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func benchCheck(b *testing.B, conn grpc.ClientConnInterface) {
	hc := healthpb.NewHealthClient(conn)
	req := &healthpb.HealthCheckRequest{}
	benchCalls(b, func(ctx context.Context) error {
		_, err := hc.Check(ctx, req)
		return err
	})
}

// benchProviders is a sampled tracer provider exporting to a discarding batch exporter and a meter
// provider with a manual reader (never collected), shut down when the benchmark ends; the exporter
// counts the spans.
func benchProviders(b *testing.B) (*sdktrace.TracerProvider, *sdkmetric.MeterProvider, *countingExporter) {
	exp := &countingExporter{}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) })
	return tp, mp, exp
}

func BenchmarkGRPCClient(b *testing.B) {
	b.Run("bare", func(b *testing.B) { benchBareClient(b) })
	b.Run("otelgrpc", func(b *testing.B) {
		tp, mp, _ := benchProviders(b)
		benchBareClient(b, grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(tp), otelgrpc.WithMeterProvider(mp))))
	})
	for _, n := range []int{1, 3} {
		b.Run("chassis/"+strconv.Itoa(n)+"-instances", func(b *testing.B) { benchChassis(b, n) })
	}
	b.Run("kratos", benchKratos)
	b.Run("gozero", benchGoZero)
}

func benchBareClient(b *testing.B, opts ...grpc.DialOption) {
	insts, dialer := bufServers(b, 1)
	conn, err := grpc.NewClient("passthrough:///"+insts[0].HostPort(), append([]grpc.DialOption{dialer,
		grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	benchCheck(b, conn)
}

func benchChassis(b *testing.B, n int) {
	insts, dialer := bufServers(b, n)
	tp, mp, _ := benchProviders(b)
	c, err := grpcclient.New("svc", discovery.NewStatic("svc", insts),
		grpcclient.WithDialOptions(dialer), grpcclient.WithMeterProvider(mp), grpcclient.WithTracerProvider(tp),
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

func benchKratos(b *testing.B) {
	insts, dialer := bufServers(b, 1)
	tp, mp, _ := benchProviders(b)
	meter := mp.Meter("bench")
	requests, err1 := kmetrics.DefaultRequestsCounter(meter, kmetrics.DefaultClientRequestsCounterName)
	seconds, err2 := kmetrics.DefaultSecondsHistogram(meter, kmetrics.DefaultClientSecondsHistogramName)
	if err1 != nil || err2 != nil {
		b.Fatal(err1, err2)
	}
	conn, err := kgrpc.DialInsecure(context.Background(),
		kgrpc.WithEndpoint(insts[0].HostPort()),
		kgrpc.WithOptions(dialer),
		kgrpc.WithMiddleware(
			ktracing.Client(ktracing.WithTracerProvider(tp)),
			kmetrics.Client(kmetrics.WithRequests(requests), kmetrics.WithSeconds(seconds)),
			circuitbreaker.Client(),
		))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	benchCheck(b, conn)
}

func benchGoZero(b *testing.B) {
	logx.Disable()
	insts, dialer := bufServers(b, 1)
	tp, _, _ := benchProviders(b)
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(tp)
	defer otel.SetTracerProvider(prev)
	c, err := zrpc.NewClient(zrpc.RpcClientConf{
		Endpoints: []string{insts[0].HostPort()},
		NonBlock:  true,
		Timeout:   (2 * time.Second).Milliseconds(),
		Middlewares: zrpc.ClientMiddlewaresConf{
			Trace: true, Duration: true, Prometheus: true, Breaker: true, Timeout: true,
		},
		BalancerName: "p2c_ewma",
	}, zrpc.WithDialOption(dialer))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Conn().Close()
	benchCheck(b, c.Conn())
}
