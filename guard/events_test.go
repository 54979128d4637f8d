package guard_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/cloudchassis/kit/guard"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// traced runs h for r inside a recorded span and returns the span's events.
func traced(t *testing.T, h http.Handler, r *http.Request) (*httptest.ResponseRecorder, []sdktrace.Event) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("test").Start(r.Context(), "server")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r.WithContext(ctx))
	span.End()
	ended := rec.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans ended", len(ended))
	}
	return w, ended[0].Events()
}

func findEvent(events []sdktrace.Event, name string) (sdktrace.Event, bool) {
	for _, e := range events {
		if e.Name == name {
			return e, true
		}
	}
	return sdktrace.Event{}, false
}

func TestShedEventOnSpan(t *testing.T) {
	cfg := guard.DefaultShedConfig()
	cfg.InitialLimit, cfg.MinLimit, cfg.MaxLimit = 4, 4, 4
	s := must(guard.NewShedder(cfg))
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	h := s.Middleware(ok)

	// Admitted: no event.
	w, events := traced(t, h, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	if _, found := findEvent(events, semconv.EventShed); found {
		t.Fatal("chassis.shed on an admitted request")
	}

	// Full: the refusal is on the request's span, with its priority.
	var held []guard.Ticket
	for range 4 {
		tk, ok := s.TryAcquire(guard.PriorityDefault)
		if !ok {
			t.Fatal("idle shedder refused")
		}
		held = append(held, tk)
	}
	defer func() {
		for _, tk := range held {
			tk.Done()
		}
	}()
	for _, tc := range []struct {
		header string
		want   string
	}{{"", semconv.PriorityDefault}, {"sheddable", semconv.PrioritySheddable}} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.header != "" {
			r.Header.Set("X-Request-Priority", tc.header)
		}
		w, events := traced(t, h, r)
		if w.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", w.Code)
		}
		e, found := findEvent(events, semconv.EventShed)
		if !found {
			t.Fatalf("no %s event on the span of a shed request; events: %v", semconv.EventShed, events)
		}
		attrs := attribute.NewSet(e.Attributes...)
		if v, _ := attrs.Value(semconv.AttrPriority); v.AsString() != tc.want {
			t.Errorf("%s = %q, want %q", semconv.AttrPriority, v.AsString(), tc.want)
		}
	}
}

func TestRateLimitedEventOnSpan(t *testing.T) {
	l := must(guard.NewLimiter(guard.Rate{PerSecond: 1, Burst: 1}))
	h := l.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	w, events := traced(t, h, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("first request: status %d", w.Code)
	}
	if _, found := findEvent(events, semconv.EventRateLimited); found {
		t.Fatal("chassis.rate_limited on an allowed request")
	}
	w, events = traced(t, h, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("second request: status %d, want 429", w.Code)
	}
	if _, found := findEvent(events, semconv.EventRateLimited); !found {
		t.Fatalf("no %s event on the span of a rate-limited request; events: %v", semconv.EventRateLimited, events)
	}
}
