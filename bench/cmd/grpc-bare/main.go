// Command grpc-bare is the baseline of the TCP benchmark's gRPC configurations (../../tcp -grpc):
// grpc.testing.TestService/UnaryCall on a bare grpc-go server with the standard health service
// (SERVING), nothing else. With -otel it adds otelgrpc's server stats handler, as a service
// instrumented the usual way has it: an SDK tracer provider exporting OTLP/HTTP per the OTEL_*
// variables (hello.Tracing) and OpenTelemetry metrics read by a Prometheus exporter, served on
// -admin with pprof.
package main

import (
	"context"
	"flag"
	"log"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/cloudchassis/kit/bench/internal/hello"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "gRPC listen address")
	admin := flag.String("admin", "", "pprof (and, with -otel, metrics) address; empty serves none")
	otel := flag.Bool("otel", false, "instrument with otelgrpc's server stats handler")
	flag.Parse()
	if err := run(*addr, *admin, *otel); err != nil {
		log.Fatal(err)
	}
}

func run(addr, admin string, otel bool) error {
	ctx := context.Background()
	var opts []grpc.ServerOption
	extra := map[string]http.Handler{}
	if otel {
		tp, err := hello.Tracing(ctx)
		if err != nil {
			return err
		}
		defer tp.Shutdown(ctx)
		mp, metricsHandler, err := hello.Metrics()
		if err != nil {
			return err
		}
		defer mp.Shutdown(ctx)
		extra["/metrics"] = metricsHandler
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(tp), otelgrpc.WithMeterProvider(mp), otelgrpc.WithPropagators(hello.Propagator()))))
	}
	if err := hello.Admin(ctx, admin, extra); err != nil {
		return err
	}
	srv := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(srv, hello.TestService{})
	healthpb.RegisterHealthServer(srv, health.NewServer()) // SERVING for ""
	return hello.ServeGRPC(srv, addr)
}
