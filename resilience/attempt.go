package resilience

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cloudchassis/kit/internal/eofbody"
	"github.com/cloudchassis/kit/resilience/policy"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// attemptTransport is the per-attempt half of a Dependency below the instance breaker: the
// minimum-time check (MinAttemptTime), the per-attempt timeout, the bulkhead and the deadline header
// fused into one layer, and the attempt's span (WithTracerProvider) under a sampled call. Fused, an
// attempt costs one allocation (the request copy with its new context and header, the header value
// and the body wrapper that ends the timer and frees the bulkhead slot) instead of two request
// copies, a header clone and two body wrappers. The behaviour is that of
// Chain(next, timeoutPolicy(d), wrapBulkhead, propagateDeadline(margin)), which attempt_test.go
// checks against the separate layers.
type attemptTransport struct {
	timeout time.Duration // <= 0: no per-attempt timeout
	// minAttempt refuses attempts whose caller's deadline leaves less (ReasonDeadlineTooShort); 0: never.
	minAttempt time.Duration
	bulkhead   *policy.Bulkhead // nil: no limit
	propagate  bool
	margin     time.Duration
	ownValue   string // the TimeoutHeader value when our own timer sets the deadline: a constant
	next       http.RoundTripper
	tel        *instruments
	tracer     trace.Tracer         // nil: no attempt spans (WithTracerProvider)
	spanAttrs  []attribute.KeyValue // the instance, when known
}

// attempt is the state of one attempt in flight, allocated once.
type attempt struct {
	req      http.Request
	value    [1]string // the TimeoutHeader value
	body     eofbody.Body
	cancel   context.CancelFunc // nil without an own timer
	bulkhead *policy.Bulkhead
	span     trace.Span // nil without an attempt span
}

func (t *attemptTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	parent := req.Context()
	var left time.Duration // time left for the attempt, when it has a deadline
	dl, hasDeadline := parent.Deadline()
	if hasDeadline {
		left = time.Until(dl)
		if left < t.minAttempt {
			// Too little time for the callee to do anything useful: refuse before any span, pick of a
			// bulkhead slot or byte on the wire. Local, so neither breakers nor the balancer count it.
			closeRequestBody(req)
			t.tel.reject(parent, semconv.ReasonDeadlineTooShort, "")
			return nil, &RejectedError{Reason: semconv.ReasonDeadlineTooShort}
		}
	}
	ctx := parent
	var span trace.Span
	if t.tracer != nil && trace.SpanContextFromContext(parent).IsSampled() {
		// Attempt spans follow the call's sampling decision: an unsampled call gets none, at no cost.
		ctx, span = t.tracer.Start(parent, semconv.SpanAttempt, trace.WithAttributes(t.spanAttrs...))
	}
	var cancel context.CancelFunc
	if t.timeout > 0 && (!hasDeadline || left > t.timeout) {
		// Without the check a second timer would run that can never fire first.
		ctx, cancel = context.WithTimeoutCause(ctx, t.timeout, errOwnTimeout)
		left, hasDeadline = t.timeout, true // the clock was just read: no need to read it again
	}
	if err := acquire(ctx, t.bulkhead, t.tel); err != nil {
		closeRequestBody(req)
		return nil, endSpan(span, t.failed(parent, ctx, cancel, err))
	}
	header := t.propagate && hasDeadline
	if cancel == nil && t.bulkhead == nil && !header && span == nil {
		return t.next.RoundTrip(req) // nothing to do after the call: no copy, no wrapper
	}

	a := &attempt{cancel: cancel, bulkhead: t.bulkhead, span: span}
	a.req = *req.WithContext(ctx) // inlined: WithContext's own copy stays on the stack
	if header {
		// A new map sharing the caller's value slices (nothing below writes to them), plus ours.
		h := make(http.Header, len(req.Header)+1)
		for k, v := range req.Header {
			h[k] = v
		}
		if cancel != nil {
			a.value[0] = t.ownValue
		} else {
			a.value[0] = timeoutValue(left, t.margin)
		}
		h[TimeoutHeader] = a.value[:]
		a.req.Header = h
	}
	resp, err := t.next.RoundTrip(&a.req)
	if err != nil {
		a.bulkhead.Release()
		return nil, endSpan(span, t.failed(parent, ctx, cancel, err))
	}
	if span != nil {
		span.SetAttributes(attribute.Int(semconv.AttrHTTPResponseStatusCode, resp.StatusCode))
		if resp.StatusCode >= 500 {
			span.SetStatus(codes.Error, strconv.Itoa(resp.StatusCode))
		}
	}
	if eofbody.Bare(resp) {
		a.Release()
		return resp, nil
	}
	a.body.ReadCloser, a.body.R = resp.Body, a
	resp.Body = &a.body
	return resp, nil
}

// failed ends a failed attempt: it stops the timer and turns the expiry of our own timer (not the
// caller's deadline) into a *RejectedError matching ErrTimeout.
func (t *attemptTransport) failed(parent, ctx context.Context, cancel context.CancelFunc, err error) error {
	if cancel == nil {
		return err
	}
	expired := context.Cause(ctx) == errOwnTimeout && parent.Err() == nil
	cancel()
	if !expired {
		return err
	}
	t.tel.reject(parent, semconv.ReasonTimeout, "")
	return &RejectedError{Reason: semconv.ReasonTimeout}
}

// Release stops the attempt's timer, frees its bulkhead slot and ends its span; a.body calls it once.
func (a *attempt) Release() {
	if a.cancel != nil {
		a.cancel()
	}
	a.bulkhead.Release()
	if a.span != nil {
		a.span.End()
	}
}

// endSpan ends a failed attempt's span, if any, with err, and returns err.
func endSpan(span trace.Span, err error) error {
	if span != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.End()
	}
	return err
}

// timeoutValue is the TimeoutHeader value for left time to go: left minus margin in milliseconds,
// at least 1.
func timeoutValue(left, margin time.Duration) string {
	return strconv.FormatInt(max((left-margin).Milliseconds(), 1), 10)
}

// closeRequestBody closes the body of a request that will not be sent, as a RoundTripper must.
func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
