package resilience

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/telemetry/semconv"

	"github.com/cloudchassis/kit/resilience/policy"
)

// Each documented span event and reason this package emits is provoked here and looked up on the
// span of the call it happened in (telemetry/semconv's TestEveryDocumentedEventIsProvoked checks
// that every one has such a test).

// tracedCall records the spans of calls made through calls.
type tracedCall struct {
	sr *tracetest.SpanRecorder
	tp *sdktrace.TracerProvider
}

func newTracedCall() *tracedCall {
	sr := tracetest.NewSpanRecorder()
	return &tracedCall{sr: sr, tp: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))}
}

// do sends one GET through rt under a new span named name (with ctx's deadline, if any), and returns
// the response (closed) and error.
func (c *tracedCall) do(t *testing.T, ctx context.Context, name string, rt http.RoundTripper) (*http.Response, error) {
	t.Helper()
	ctx, span := c.tp.Tracer("test").Start(ctx, name)
	defer span.End()
	resp, err := get(t, ctx, rt, http.MethodGet, "")
	if resp != nil {
		readClose(t, resp)
	}
	return resp, err
}

// events returns the events of the ended span named name, each as name{k=v ...}.
func (c *tracedCall) events(t *testing.T, name string) []string {
	t.Helper()
	for _, s := range c.sr.Ended() {
		if s.Name() != name {
			continue
		}
		var out []string
		for _, ev := range s.Events() {
			out = append(out, eventString(ev.Name, ev.Attributes))
		}
		return out
	}
	t.Fatalf("no span %q", name)
	return nil
}

func eventString(name string, attrs []attribute.KeyValue) string {
	kvs := make([]string, 0, len(attrs))
	for _, kv := range attrs {
		kvs = append(kvs, string(kv.Key)+"="+kv.Value.Emit())
	}
	return name + "{" + strings.Join(kvs, " ") + "}"
}

func ev(name string, kvs ...string) string {
	var attrs []attribute.KeyValue
	for i := 0; i+1 < len(kvs); i += 2 {
		attrs = append(attrs, attribute.String(kvs[i], kvs[i+1]))
	}
	return eventString(name, attrs)
}

func wantEvents(t *testing.T, span string, got []string, want ...string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s: events\n got %q\nwant %q", span, got, want)
	}
}

// Every local rejection shows on the span of the call it refused, with its reason.
func TestSpanEventRejected(t *testing.T) {
	c := newTracedCall()
	rejected := func(r string, kvs ...string) string {
		return ev(semconv.EventRejected, append([]string{semconv.AttrRejectionReason, r}, kvs...)...)
	}

	// breaker_open: an open instance breaker refuses.
	b := newTestBreaker(policy.BreakerConfig{Failures: 1, Delay: time.Hour}, "a")
	b.Record(policy.Failure)
	if _, err := c.do(t, context.Background(), "breaker", b.Wrap(newRecorder("x"))); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("breaker: %v", err)
	}
	wantEvents(t, "breaker", c.events(t, "breaker"), rejected(semconv.ReasonBreakerOpen, semconv.AttrInstance, "a"))

	// budget_exhausted: a 503 needs a retry, the empty budget refuses it.
	rec := newRecorder("x")
	rec.steps["x"] = []step{{status: 503}}
	rt := retryPolicy(retryConfig{MaxAttempts: 2}, policy.NewBudget(0, 0, time.Second))(rec)
	if resp, err := c.do(t, context.Background(), "budget", rt); err != nil || resp.StatusCode != 503 {
		t.Fatalf("budget: %v, %v", resp, err)
	}
	wantEvents(t, "budget", c.events(t, "budget"), rejected(semconv.ReasonBudgetExhausted))

	// bulkhead_full: the only slot is taken.
	bh := policy.NewBulkhead(1, 0)
	if err := bh.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.do(t, context.Background(), "bulkhead", wrapBulkhead(bh, newOptions(nil).instruments())(newRecorder("x"))); !errors.Is(err, ErrBulkheadFull) {
		t.Fatalf("bulkhead: %v", err)
	}
	bh.Release()
	wantEvents(t, "bulkhead", c.events(t, "bulkhead"), rejected(semconv.ReasonBulkheadFull))

	// timeout: our own timer expires before the slow answer.
	synctest.Test(t, func(t *testing.T) {
		rec := newRecorder("x")
		rec.steps["x"] = []step{{delay: time.Second}}
		if _, err := c.do(t, context.Background(), "timeout", timeoutPolicy(100*time.Millisecond)(rec)); !errors.Is(err, ErrTimeout) {
			t.Fatalf("timeout: %v", err)
		}
	})
	wantEvents(t, "timeout", c.events(t, "timeout"), rejected(semconv.ReasonTimeout))

	// deadline_too_short: TestDeadlineTooShort checks the rule; here, the event.
	synctest.Test(t, func(t *testing.T) {
		d, err := NewDependency("dep", DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), DefaultConfig().MinAttemptTime-time.Millisecond)
		defer cancel()
		if _, err := c.do(t, ctx, "too-short", d.Wrap(d.attempt(newRecorder("x"), ""))); !errors.Is(err, ErrDeadlineTooShort) {
			t.Fatalf("deadline too short: %v", err)
		}
	})
	wantEvents(t, "too-short", c.events(t, "too-short"), rejected(semconv.ReasonDeadlineTooShort))
}

// An attempt is refused, not sent, when the caller's deadline leaves less than MinAttemptTime: it
// matches ErrDeadlineTooShort and context.DeadlineExceeded, is not retried, and does not count
// against the instance's breaker. With exactly MinAttemptTime left, it is sent.
func TestDeadlineTooShort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.BreakerFailures = 1
		d, err := NewDependency("dep", cfg)
		if err != nil {
			t.Fatal(err)
		}
		rec := newRecorder("a")
		inst := d.Instance("a", rec)
		rt := d.Wrap(inst)

		ctx, cancel := context.WithTimeout(context.Background(), cfg.MinAttemptTime-time.Nanosecond)
		_, err = get(t, ctx, rt, http.MethodGet, "")
		cancel()
		var rej *RejectedError
		if !errors.As(err, &rej) || rej.Reason != semconv.ReasonDeadlineTooShort || !rej.Class().Local ||
			!errors.Is(err, context.DeadlineExceeded) || rej.ErrorType() != semconv.ReasonDeadlineTooShort {
			t.Fatalf("err = %v, want a local deadline_too_short rejection matching context.DeadlineExceeded", err)
		}
		if calls := rec.Calls(); len(calls) != 0 {
			t.Fatalf("sent %d attempts, want none (and no retry)", len(calls))
		}
		if !inst.(discovery.InstanceTransport).Available() || d.breaker.State() != breakerStates[0] {
			t.Fatal("a refused attempt counted against a breaker")
		}

		ctx, cancel = context.WithTimeout(context.Background(), cfg.MinAttemptTime)
		defer cancel()
		resp, err := get(t, ctx, rt, http.MethodGet, "")
		if err != nil {
			t.Fatalf("exactly MinAttemptTime left: %v", err)
		}
		readClose(t, resp)
		if calls := rec.Calls(); len(calls) != 1 {
			t.Fatalf("sent %d attempts, want 1", len(calls))
		}

		// MinAttemptTime 0 disables the check.
		cfg.MinAttemptTime = 0
		d, _ = NewDependency("dep", cfg)
		ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		resp, err = get(t, ctx, d.Wrap(d.attempt(rec, "")), http.MethodGet, "")
		if err != nil {
			t.Fatalf("check disabled: %v", err)
		}
		readClose(t, resp)
	})
}

// A breaker's state changes show on the span of the call that caused them, and only there.
func TestSpanEventBreakerTransition(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newTracedCall()
		b := newTestBreaker(policy.BreakerConfig{Failures: 2, Delay: time.Second}, "a")
		rec := newRecorder("a")
		rec.steps["a"] = []step{{status: 503}, {status: 503}, {status: 200}}
		rt := b.Wrap(rec)
		c.do(t, context.Background(), "first failure", rt)
		c.do(t, context.Background(), "second failure", rt)
		time.Sleep(2 * time.Second) // past the open delay (1 s ± 20%)
		c.do(t, context.Background(), "probe", rt)

		transition := func(from, to string) string {
			return ev(semconv.EventBreakerTransition, semconv.AttrBreakerFrom, from, semconv.AttrBreakerTo, to, semconv.AttrInstance, "a")
		}
		wantEvents(t, "first failure", c.events(t, "first failure"))
		wantEvents(t, "second failure", c.events(t, "second failure"), transition(semconv.BreakerClosed, semconv.BreakerOpen))
		wantEvents(t, "probe", c.events(t, "probe"),
			transition(semconv.BreakerOpen, semconv.BreakerHalfOpen), transition(semconv.BreakerHalfOpen, semconv.BreakerClosed))

		// A dependency-wide breaker names itself "service"; a refused connection opens at once.
		d := newTestBreaker(policy.BreakerConfig{Failures: 5}, "")
		refused := newRecorder("x")
		refused.steps["x"] = []step{{err: &net_OpError}}
		c.do(t, context.Background(), "refused", d.Wrap(refused))
		wantEvents(t, "refused", c.events(t, "refused"), ev(semconv.EventBreakerTransition,
			semconv.AttrBreakerFrom, semconv.BreakerClosed, semconv.AttrBreakerTo, semconv.BreakerOpen,
			semconv.AttrInstance, semconv.BreakerInstanceService))
	})
}

// A fallback answer shows on the call's span, with why the call failed.
func TestSpanEventFallback(t *testing.T) {
	c := newTracedCall()
	fallback := Fallback(func(*http.Request, int, error) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("cached"))}, nil
	})
	open := newTestBreaker(policy.BreakerConfig{Failures: 1, Delay: time.Hour}, "a")
	open.Record(policy.Failure)
	status := newRecorder("x")
	status.steps["x"] = []step{{status: 503}}
	broken := newRecorder("x")
	broken.steps["x"] = []step{{err: io.ErrUnexpectedEOF}}
	slow := newRecorder("x")
	slow.steps["x"] = []step{{err: context.DeadlineExceeded}}
	ok := newRecorder("x")
	for _, tc := range []struct {
		name string
		rt   http.RoundTripper
		want []string
	}{
		{"status", status, []string{ev(semconv.EventFallback, semconv.AttrErrorType, "503")}},
		{"rejected", open.Wrap(ok), []string{
			ev(semconv.EventRejected, semconv.AttrRejectionReason, semconv.ReasonBreakerOpen, semconv.AttrInstance, "a"),
			ev(semconv.EventFallback, semconv.AttrRejectionReason, semconv.ReasonBreakerOpen)}},
		{"error", broken, []string{ev(semconv.EventFallback, semconv.AttrErrorType, "_OTHER")}},
		{"deadline", slow, []string{ev(semconv.EventFallback, semconv.AttrErrorType, semconv.ReasonTimeout)}},
		{"success", ok, nil},
	} {
		resp, err := c.do(t, context.Background(), tc.name, fallback(tc.rt))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v, %v", tc.name, resp, err)
		}
		wantEvents(t, tc.name, c.events(t, tc.name), tc.want...)
	}
}
