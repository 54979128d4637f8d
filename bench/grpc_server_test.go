package bench

import (
	"context"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/cloudchassis/kit/bench/internal/hello"
	"github.com/cloudchassis/kit/internal/grpctest"
)

// BenchmarkGRPCServer measures a unary call over bufconn (in process, no network) through a bare
// grpc-go server, through otelgrpc's stats handler (a sampled span exported to a discarding
// exporter, and its metrics) and through the chassis server (Service.GRPC: its whole default
// chain, the same tracing and metrics, shedding on, access log off as otelgrpc has none). The
// server overhead of a row is its time minus the bare row's; the client side is the same bare
// client in every row. The goal: chassis' overhead at most half of otelgrpc's. Each row
// also reports cpu-ns/op (process CPU per call, client and server); on a shared machine take the
// overheads from its medians (benchstat), as wall time there includes waiting for a CPU.
//
//	cd bench && go test -run '^$' -bench GRPCServer -benchmem -count 6
func BenchmarkGRPCServer(b *testing.B) {
	run := func(b *testing.B, srv *grpc.Server) {
		testgrpc.RegisterTestServiceServer(srv, hello.TestService{})
		conn, stop, err := grpctest.Serve(srv)
		if err != nil {
			b.Fatal(err)
		}
		defer stop()
		c := testgrpc.NewTestServiceClient(conn)
		req := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("hello")}}
		benchCalls(b, func(ctx context.Context) error {
			_, err := c.UnaryCall(ctx, req)
			return err
		})
	}
	b.Run("bare", func(b *testing.B) { run(b, grpc.NewServer()) })
	b.Run("otelgrpc", func(b *testing.B) {
		tp, mp, exp := benchProviders(b)
		run(b, grpc.NewServer(grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(tp), otelgrpc.WithMeterProvider(mp)))))
		_ = tp.ForceFlush(context.Background())
		if exp.spans.Load() == 0 {
			b.Fatal("otelgrpc exported no span")
		}
	})
	for _, tc := range []struct {
		name   string
		export bool
	}{
		{"chassis/sampled", true},      // every span recorded and exported, as the otelgrpc row
		{"chassis/no-exporter", false}, // the default without OTLP: trace ids, no recorded span
	} {
		b.Run(tc.name, func(b *testing.B) {
			env := map[string]string{"PORT": "0", "ADMIN_PORT": "0", "GRPC_PORT": "0", "ACCESS_LOG": "false",
				"OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_EXPORTER": "none"}
			svc, exp := benchService(b, env, tc.export)
			defer func() { _ = svc.Telemetry().Shutdown(context.Background()) }()
			run(b, svc.GRPC())
			if tc.export {
				_ = svc.Telemetry().Shutdown(context.Background())
				if exp.spans.Load() == 0 {
					b.Fatal("chassis exported no span")
				}
			}
		})
	}
}
