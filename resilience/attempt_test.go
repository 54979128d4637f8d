package resilience

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

// attemptLayers returns the per-attempt layers of cfg twice: fused (Dependency.Attempt, the hot path)
// and composed from the public middlewares, which the fused layer must behave like.
func attemptLayers(t *testing.T, cfg Config, next http.RoundTripper) map[string]http.RoundTripper {
	t.Helper()
	d, err := NewDependency("dep", cfg)
	if err != nil {
		t.Fatal(err)
	}
	composed := Chain(next, timeoutPolicy(cfg.AttemptTimeout), wrapBulkhead(d.bulkhead, d.tel))
	if cfg.PropagateDeadline {
		composed = Chain(next, timeoutPolicy(cfg.AttemptTimeout), wrapBulkhead(d.bulkhead, d.tel), propagateDeadline(cfg.DeadlineMargin))
	}
	return map[string]http.RoundTripper{"fused": d.attempt(next, ""), "composed": composed}
}

// seen is a backend recording the header and context of the last attempt.
type seen struct {
	header   atomic.Value // string
	ctx      atomic.Value // context.Context
	stall    bool         // wait for the attempt's context to end
	bodyText string
}

func (s *seen) RoundTrip(r *http.Request) (*http.Response, error) {
	s.header.Store(r.Header.Get(TimeoutHeader))
	s.ctx.Store(r.Context())
	if s.stall {
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(s.bodyText)), Request: r}, nil
}

func (s *seen) lastCtx() context.Context { return s.ctx.Load().(context.Context) }

func attemptCfg() Config {
	cfg := DefaultConfig()
	cfg.AttemptTimeout, cfg.DeadlineMargin = 2*time.Second, 5*time.Millisecond
	return cfg
}

func TestAttemptDeadlineHeader(t *testing.T) {
	for name := range attemptLayers(t, attemptCfg(), nil) {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				backend := &seen{bodyText: "ok"}
				rt := attemptLayers(t, attemptCfg(), backend)[name]
				req, _ := http.NewRequest(http.MethodGet, "http://svc/x", nil)
				req.Header.Set("Accept", "text/plain")
				resp, err := rt.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				readClose(t, resp)
				// Our own 2 s timer: 2 s minus the 5 ms margin.
				if got := backend.header.Load(); got != "1995" {
					t.Fatalf("own timer: %s = %q, want 1995", TimeoutHeader, got)
				}
				if req.Header.Get(TimeoutHeader) != "" || len(req.Header) != 1 {
					t.Fatalf("the caller's header was modified: %v", req.Header)
				}

				// The caller's earlier deadline wins and is sent instead, less the margin.
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				defer cancel()
				time.Sleep(100 * time.Millisecond)
				resp, err = rt.RoundTrip(req.WithContext(ctx))
				if err != nil {
					t.Fatal(err)
				}
				readClose(t, resp)
				if got := backend.header.Load(); got != "395" {
					t.Fatalf("caller's deadline: %s = %q, want 395", TimeoutHeader, got)
				}
				if dl, _ := backend.lastCtx().Deadline(); !dl.Equal(time.Now().Add(400 * time.Millisecond)) {
					t.Fatalf("attempt deadline %v, want the caller's", dl)
				}
			})
		})
	}
}

func TestAttemptTimeoutError(t *testing.T) {
	for name := range attemptLayers(t, attemptCfg(), nil) {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				backend := &seen{stall: true}
				rt := attemptLayers(t, attemptCfg(), backend)[name]
				req, _ := http.NewRequest(http.MethodGet, "http://svc/x", nil)
				start := time.Now()
				_, err := rt.RoundTrip(req)
				var re *RejectedError
				if !errors.As(err, &re) || re.Reason != semconv.ReasonTimeout || !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("own timeout: err = %v, want a timeout RejectedError", err)
				}
				if took := time.Since(start); took != 2*time.Second {
					t.Fatalf("own timeout after %v, want 2s", took)
				}

				// The caller's own deadline gives the caller's error, not ours.
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_, err = rt.RoundTrip(req.WithContext(ctx))
				if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &re) {
					t.Fatalf("caller's deadline: err = %v, want context.DeadlineExceeded alone", err)
				}
			})
		})
	}
}

// The attempt's context (its timer) lives until the body is read to the end or closed, and ends then.
func TestAttemptLivesUntilBodyEnds(t *testing.T) {
	for name := range attemptLayers(t, attemptCfg(), nil) {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				backend := &seen{bodyText: "hello"}
				rt := attemptLayers(t, attemptCfg(), backend)[name]
				for _, finish := range []string{"close", "eof"} {
					req, _ := http.NewRequest(http.MethodGet, "http://svc/x", nil)
					resp, err := rt.RoundTrip(req)
					if err != nil {
						t.Fatal(err)
					}
					ctx := backend.lastCtx()
					time.Sleep(time.Second)
					if ctx.Err() != nil {
						t.Fatalf("%s: attempt context ended before the body: %v", finish, ctx.Err())
					}
					if finish == "eof" {
						b, _ := io.ReadAll(resp.Body)
						if string(b) != "hello" {
							t.Fatalf("body %q", b)
						}
					} else {
						resp.Body.Close()
					}
					if ctx.Err() == nil {
						t.Fatalf("%s: attempt context still live after the body ended", finish)
					}
					resp.Body.Close() // a second Close is harmless
				}
			})
		})
	}
}

// trackBody records whether it was closed.
type trackBody struct {
	io.Reader
	closed atomic.Bool
}

func (b *trackBody) Close() error { b.closed.Store(true); return nil }

func TestAttemptBulkhead(t *testing.T) {
	cfg := attemptCfg()
	cfg.MaxConcurrent = 1
	for name := range attemptLayers(t, cfg, nil) {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				backend := &seen{bodyText: "x"}
				rt := attemptLayers(t, cfg, backend)[name]
				req, _ := http.NewRequest(http.MethodGet, "http://svc/x", nil)
				first, err := rt.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				// The slot is held while the first body is open.
				body := &trackBody{Reader: strings.NewReader("payload")}
				post, _ := http.NewRequest(http.MethodPost, "http://svc/x", body)
				if _, err := rt.RoundTrip(post); !errors.Is(err, ErrBulkheadFull) {
					t.Fatalf("second attempt: err = %v, want ErrBulkheadFull", err)
				}
				if !body.closed.Load() {
					t.Fatal("the refused request's body was not closed")
				}
				first.Body.Close()
				resp, err := rt.RoundTrip(req)
				if err != nil {
					t.Fatalf("after the first body was closed: %v", err)
				}
				resp.Body.Close()
			})
		})
	}
}

// Without a timer, bulkhead, minimum time or header to add, the fused layer passes the request on
// untouched.
func TestAttemptPassThrough(t *testing.T) {
	cfg := attemptCfg()
	cfg.AttemptTimeout, cfg.PropagateDeadline, cfg.MinAttemptTime = 0, false, 0
	d, err := NewDependency("dep", cfg)
	if err != nil {
		t.Fatal(err)
	}
	backend := &seen{}
	if rt := d.attempt(backend, ""); rt != backend {
		t.Fatalf("Attempt with nothing to do = %T, want next itself", rt)
	}
	cfg.PropagateDeadline = true
	d, _ = NewDependency("dep", cfg)
	rt := d.attempt(backend, "")
	req, _ := http.NewRequest(http.MethodGet, "http://svc/x", nil)
	var got *http.Request
	resp, err := rt.RoundTrip(req) // no deadline: no header, no copy
	if err != nil {
		t.Fatal(err)
	}
	got = resp.Request
	if got != req || backend.header.Load() != "" {
		t.Fatalf("no deadline: request copied (%v) or header sent (%q)", got != req, backend.header.Load())
	}
}

// Under a sampled call each attempt gets a span with its instance and outcome; an unsampled call
// gets none.
func TestAttemptSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	defer tp.Shutdown(context.Background())
	cfg := attemptCfg()
	d, err := NewDependency("pricing", cfg, WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	backend := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		code := 200
		if r.URL.Path == "/fail" {
			code = 503
		}
		return &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader("x")), Request: r}, nil
	})
	rt := d.Instance("pricing-1", backend)

	tracer := tp.Tracer("test")
	for _, path := range []string{"/ok", "/fail"} {
		ctx, call := tracer.Start(context.Background(), "call")
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://pricing"+path, nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if len(rec.Ended()) != 0 {
			t.Fatal("attempt span ended before the body")
		}
		readClose(t, resp)
		call.End()
		spans := rec.Ended()
		if len(spans) != 2 || spans[0].Name() != semconv.SpanAttempt || spans[0].Parent().SpanID() != call.SpanContext().SpanID() {
			t.Fatalf("%s: spans %v, want the attempt under the call", path, spans)
		}
		got := map[attribute.Key]attribute.Value{}
		for _, kv := range spans[0].Attributes() {
			got[kv.Key] = kv.Value
		}
		if got[semconv.AttrInstance].AsString() != "pricing-1" || got[semconv.AttrPeerService].AsString() != "pricing" ||
			got[semconv.AttrHTTPResponseStatusCode].AsInt64() == 0 {
			t.Fatalf("%s: attempt attributes %v", path, got)
		}
		if wantErr := path == "/fail"; (spans[0].Status().Code == codes.Error) != wantErr {
			t.Fatalf("%s: status %v", path, spans[0].Status())
		}
		rec.Reset()
	}

	// Unsampled call: no attempt span.
	never := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	ctx, call := never.Tracer("test").Start(context.Background(), "call")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://pricing/ok", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	readClose(t, resp)
	call.End()
	if n := len(rec.Ended()) + len(rec.Started()); n != 0 {
		t.Fatalf("unsampled call: %d attempt spans", n)
	}
}
