package resilience

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Fallback calls fn when the call through next failed: it returned an error, or a response whose
// class is Retryable or Failure (by default 429 and 5xx except 501; its body is closed before fn is
// called; WithClassifier changes the classification). fn's result is the call's
// result; fn receives the original error (nil for a failed status) and the status (0 for an error), so
// it can serve a cached or default answer, or return a better error. Place it outermost.
//
// Each fallback adds a chassis.fallback event to the request's recording span, so that a trace
// shows the answer did not come from the dependency: with chassis.rejection.reason when the call was
// refused locally (a *RejectedError), else with error.type (the status code, the error's
// ErrorType() when it has one, "timeout", "canceled" or "_OTHER").
func Fallback(fn func(req *http.Request, status int, err error) (*http.Response, error), opts ...Option) Middleware {
	classify := newOptions(opts).classify
	return func(next http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := next.RoundTrip(req)
			if err == nil {
				if c := classify(resp, nil); !c.Retryable && !c.Failure {
					return resp, nil
				}
			}
			status := 0
			if resp != nil {
				status = resp.StatusCode
				discard(resp)
			}
			fallbackEvent(req.Context(), status, err)
			return fn(req, status, err)
		})
	}
}

// fallbackEvent adds the chassis.fallback event for a call that failed with status or err.
func fallbackEvent(ctx context.Context, status int, err error) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	var attr attribute.KeyValue
	var rej *RejectedError
	var typed interface{ ErrorType() string }
	switch {
	case err == nil:
		attr = attribute.String(semconv.AttrErrorType, strconv.Itoa(status))
	case errors.As(err, &rej):
		attr = attribute.String(semconv.AttrRejectionReason, string(rej.Reason))
	case errors.As(err, &typed):
		attr = attribute.String(semconv.AttrErrorType, typed.ErrorType())
	case errors.Is(err, context.DeadlineExceeded):
		attr = attribute.String(semconv.AttrErrorType, semconv.ReasonTimeout)
	case errors.Is(err, context.Canceled):
		attr = attribute.String(semconv.AttrErrorType, "canceled")
	default:
		attr = attribute.String(semconv.AttrErrorType, "_OTHER")
	}
	span.AddEvent(semconv.EventFallback, trace.WithAttributes(attr))
}
