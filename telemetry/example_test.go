package telemetry_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"go.opentelemetry.io/otel/attribute"

	"github.com/cloudchassis/kit/telemetry"
	"github.com/cloudchassis/kit/telemetry/semconv"
	"github.com/cloudchassis/kit/telemetry/telemetrytest"
)

// Handler names the span after the route template, records the request duration per route and
// gives the handler a logger that carries the trace id.
func Example() {
	t := &testingT{}
	tel, rec := telemetrytest.New(t, telemetry.Settings{ServiceName: "catalog"})
	defer t.cleanup()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		tel.For(r.Context()).Info("loading item")
	})
	h := tel.Handler(mux)
	for _, path := range []string{"/items/1", "/items/2"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}

	spans := rec.Ended("GET /items/{id}")
	fmt.Println("spans:", len(spans))
	fmt.Println("requests on the route:", rec.HistogramCount(t, semconv.HTTPServerRequestDuration,
		attribute.String("http.route", "/items/{id}")))
	fmt.Println("log lines of the first trace:", len(rec.LogsWithTraceID(spans[0].SpanContext().TraceID())))
	// Output:
	// spans: 2
	// requests on the route: 2
	// log lines of the first trace: 1
}
