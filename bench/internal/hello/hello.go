// Package hello holds what the servers of the TCP benchmark (../../cmd/hello-*, ../../cmd/gateway-*)
// share: the examples/hello route's response, an admin listener with pprof and the OpenTelemetry
// set-up the peers use in production (an SDK tracer provider with OTLP/HTTP export, configured by
// the standard OTEL_* variables, as every peer's documentation shows).
package hello

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Message is the response body of GET /hello/{name}, as examples/hello writes it.
type Message struct {
	Message string `json:"message"`
}

// Greet returns the message for name.
func Greet(name string) Message { return Message{Message: "Hello, " + name + "!"} }

// Handle is the GET /hello/{name} handler of examples/hello, written with net/http alone.
func Handle(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Greet(r.PathValue("name")))
}

// Admin serves pprof and the given extra handlers on addr (the production habit of a separate admin
// port), until ctx ends. An empty addr serves nothing.
func Admin(ctx context.Context, addr string, extra map[string]http.Handler) error {
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	for p, h := range extra {
		mux.Handle(p, h)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// Tracing returns the tracer provider a peer service builds in production: OTLP/HTTP batch export to
// OTEL_EXPORTER_OTLP_ENDPOINT and the sampler of OTEL_TRACES_SAMPLER(_ARG), both read by the SDK.
// Without an endpoint it returns a provider with no exporter (spans are sampled and dropped).
func Tracing(ctx context.Context) (*sdktrace.TracerProvider, error) {
	opts := []sdktrace.TracerProviderOption{}
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" {
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	return sdktrace.NewTracerProvider(opts...), nil
}

// Propagator is W3C trace context and baggage, the peers' usual choice.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Serve runs srv on addr until SIGTERM or SIGINT, then shuts it down within a second.
func Serve(srv *http.Server, addr string) error {
	return serveUntilSignal(addr, srv.Serve, func() error {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return nil
	})
}

// serveUntilSignal listens on addr and runs serve until it fails or SIGTERM or SIGINT comes, then
// calls shutdown.
func serveUntilSignal(addr string, serve func(net.Listener) error, shutdown func() error) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	return shutdown()
}

// Metrics returns the meter provider a peer service builds to be scraped: OpenTelemetry
// instruments read by a Prometheus exporter on a registry of its own, and that registry's /metrics
// handler.
func Metrics(opts ...sdkmetric.Option) (*sdkmetric.MeterProvider, http.Handler, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, nil, err
	}
	mp := sdkmetric.NewMeterProvider(append([]sdkmetric.Option{sdkmetric.WithReader(exp)}, opts...)...)
	return mp, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), nil
}
