package chassis_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/attribute"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/telemetry/semconv"
	"github.com/cloudchassis/kit/telemetry/telemetrytest"
)

// Requests that match no route are answered as a ServeMux answers them (404, or 405 with Allow) and
// are seen: a span, http.server.request.duration under http.route "unmatched", a request id.
func TestUnmatchedRequestsAreObserved(t *testing.T) {
	rec := telemetrytest.NewRecorder()
	svc, err := chassis.New("svc", chassis.WithEnv(env("OTEL_TRACES_SAMPLER", "always_on")), chassis.WithTelemetryOptions(rec.Options()...))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(r.PathValue("id"))) })
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()

	for _, c := range []struct {
		method, path string
		status       int
		allow, body  string
	}{
		{"GET", "/items/7", 200, "", "7"},
		{"GET", "/nope", 404, "", ""},
		{"DELETE", "/items/7", 405, "GET, HEAD", ""},
		{"GET", "/items/7/more", 404, "", ""},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, _ := resp.Body.Read(buf)
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get("Allow") != c.allow {
			t.Fatalf("%s %s: %d Allow %q, want %d Allow %q", c.method, c.path, resp.StatusCode, resp.Header.Get("Allow"), c.status, c.allow)
		}
		if c.body != "" && string(buf[:n]) != c.body {
			t.Fatalf("%s %s: body %q", c.method, c.path, buf[:n])
		}
		if resp.Header.Get("X-Request-Id") == "" {
			t.Fatalf("%s %s: no request id", c.method, c.path)
		}
	}
	unmatched := attribute.String(semconv.AttrHTTPRoute, "unmatched")
	if n := rec.HistogramCount(t, semconv.HTTPServerRequestDuration, unmatched, attribute.Int(semconv.AttrHTTPResponseStatusCode, 404)); n != 2 {
		t.Fatalf("unmatched 404s counted %d times, want 2", n)
	}
	if n := rec.HistogramCount(t, semconv.HTTPServerRequestDuration, unmatched, attribute.Int(semconv.AttrHTTPResponseStatusCode, 405)); n != 1 {
		t.Fatalf("unmatched 405s counted %d times, want 1", n)
	}
	if n := rec.HistogramCount(t, semconv.HTTPServerRequestDuration, attribute.String(semconv.AttrHTTPRoute, "/items/{id}")); n != 1 {
		t.Fatalf("matched requests counted %d times, want 1", n)
	}
	if spans := rec.Ended("GET"); len(spans) != 2 {
		t.Fatalf("unmatched GET spans: %d, want 2 (named by method alone)", len(spans))
	}
}

// A service that registers "/" itself keeps it: no catch-all is added.
func TestOwnRootRouteIsKept(t *testing.T) {
	svc, err := chassis.New("svc", chassis.WithEnv(env()))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("root")) })
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, _ := resp.Body.Read(buf)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(buf[:n]) != "root" {
		t.Fatalf("GET /anything = %d %q, want the service's own root handler", resp.StatusCode, buf[:n])
	}
}
