// Command hello-gokit is examples/hello's route as a go-kit service: an endpoint with go-kit's
// Prometheus instrumenting middleware (request count and latency histogram by method and code),
// served by go-kit's httptransport under otelhttp (an SDK tracer provider exporting OTLP/HTTP to
// OTEL_EXPORTER_OTLP_ENDPOINT when set, sampled per OTEL_TRACES_SAMPLER), on a net/http mux;
// /metrics and pprof on -admin.
package main

import (
	"context"
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/cloudchassis/kit/bench/internal/hello"
	"github.com/go-kit/kit/endpoint"
	kitprom "github.com/go-kit/kit/metrics/prometheus"
	kithttp "github.com/go-kit/kit/transport/http"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
)

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

	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "hello", Name: "requests_total", Help: "Requests handled."}, []string{"method", "error"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "hello", Name: "request_duration_seconds", Help: "Request latency.",
		Buckets: prometheus.DefBuckets}, []string{"method", "error"})
	reg.MustRegister(requests, latency)
	count, hist := kitprom.NewCounter(requests), kitprom.NewHistogram(latency)
	if err := hello.Admin(ctx, admin, map[string]http.Handler{"/metrics": promhttp.HandlerFor(reg, promhttp.HandlerOpts{})}); err != nil {
		return err
	}

	var ep endpoint.Endpoint = func(_ context.Context, req any) (any, error) {
		return hello.Greet(req.(string)), nil
	}
	ep = instrument(count, hist)(ep)
	server := kithttp.NewServer(ep,
		func(_ context.Context, r *http.Request) (any, error) { return r.PathValue("name"), nil },
		kithttp.EncodeJSONResponse)
	mux := http.NewServeMux()
	mux.Handle("GET /hello/{name}", otelhttp.NewHandler(server, "GET /hello/{name}",
		otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(hello.Propagator())))
	return hello.Serve(&http.Server{Handler: mux}, addr)
}

// instrument is go-kit's usual instrumenting middleware (addsvc's shape).
func instrument(count *kitprom.Counter, hist *kitprom.Histogram) endpoint.Middleware {
	return func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, req any) (resp any, err error) {
			defer func(begin time.Time) {
				lvs := []string{"method", "hello", "error", boolText(err != nil)}
				count.With(lvs...).Add(1)
				hist.With(lvs...).Observe(time.Since(begin).Seconds())
			}(time.Now())
			return next(ctx, req)
		}
	}
}

func boolText(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
