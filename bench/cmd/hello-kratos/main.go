// Command hello-kratos is examples/hello's route on a Kratos HTTP server as protoc-gen-go-http
// generates it, with the middleware of Kratos' layout template: recovery, tracing (an SDK tracer
// provider exporting OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT when set, sampled per
// OTEL_TRACES_SAMPLER) and metrics (OpenTelemetry instruments read by a Prometheus exporter, served
// on -admin with pprof).
package main

import (
	"context"
	"flag"
	"log"
	"net/http"

	"github.com/cloudchassis/kit/bench/internal/hello"
	"github.com/go-kratos/kratos/v2"
	"github.com/go-kratos/kratos/v2/middleware/metrics"
	"github.com/go-kratos/kratos/v2/middleware/recovery"
	"github.com/go-kratos/kratos/v2/middleware/tracing"
	khttp "github.com/go-kratos/kratos/v2/transport/http"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Request is the route's input, bound from the path like a generated request message.
type Request struct {
	Name string `json:"name"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address")
	admin := flag.String("admin", "", "metrics and pprof address; empty serves none")
	flag.Parse()
	if err := run(*addr, *admin); err != nil {
		log.Fatal(err)
	}
}

func run(addr, admin string) error {
	ctx := context.Background()
	tp, err := hello.Tracing(ctx)
	if err != nil {
		return err
	}
	defer tp.Shutdown(ctx)

	mp, metricsHandler, err := hello.Metrics(
		sdkmetric.WithView(metrics.DefaultSecondsHistogramView(metrics.DefaultServerSecondsHistogramName)))
	if err != nil {
		return err
	}
	defer mp.Shutdown(ctx)
	meter := mp.Meter("hello")
	requests, err := metrics.DefaultRequestsCounter(meter, metrics.DefaultServerRequestsCounterName)
	if err != nil {
		return err
	}
	seconds, err := metrics.DefaultSecondsHistogram(meter, metrics.DefaultServerSecondsHistogramName)
	if err != nil {
		return err
	}
	if err := hello.Admin(ctx, admin, map[string]http.Handler{"/metrics": metricsHandler}); err != nil {
		return err
	}

	srv := khttp.NewServer(
		khttp.Address(addr),
		khttp.Middleware(
			recovery.Recovery(),
			tracing.Server(tracing.WithTracerProvider(tp)),
			metrics.Server(metrics.WithRequests(requests), metrics.WithSeconds(seconds)),
		),
	)
	r := srv.Route("/")
	r.GET("/hello/{name}", func(ctx khttp.Context) error {
		var in Request
		if err := ctx.BindVars(&in); err != nil {
			return err
		}
		khttp.SetOperation(ctx, "/hello.v1.Greeter/SayHello")
		h := ctx.Middleware(func(_ context.Context, req any) (any, error) {
			return hello.Greet(req.(*Request).Name), nil
		})
		out, err := h(ctx, &in)
		if err != nil {
			return err
		}
		return ctx.Result(http.StatusOK, out)
	})
	app := kratos.New(kratos.Name("hello"), kratos.Server(srv))
	return app.Run()
}
