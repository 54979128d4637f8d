package resilience

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudchassis/kit/telemetry/semconv"
)

type retryableKey struct{}

// MarkRetryable returns a context that marks a request as safe to retry and hedge although its method
// is not idempotent (for example a POST the callee deduplicates). A request carrying an
// Idempotency-Key header is treated the same way.
func MarkRetryable(ctx context.Context) context.Context {
	return context.WithValue(ctx, retryableKey{}, true)
}

// Replayable reports whether req may be sent more than once: its method is safe or idempotent (GET,
// HEAD, OPTIONS, TRACE, PUT, DELETE, RFC 9110 §9.2), it has an Idempotency-Key header, or its context
// was marked with MarkRetryable.
func Replayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete, "":
		return true
	}
	if _, ok := req.Header["Idempotency-Key"]; ok {
		return true
	}
	v, _ := req.Context().Value(retryableKey{}).(bool)
	return v
}

// notSent reports whether err proves the request never left this process or was refused before the
// callee read it, so that even a non-idempotent request may go to another instance.
func notSent(err error) bool {
	if isLocalRejection(err) || errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// retryReason returns why the attempt's result deserves another attempt, as a semconv retry reason
// (the chassis.retry.reason attribute), or "" if it does not.
// Called only when the caller's context is still live.
func retryReason(replayable bool, resp *http.Response, err error) string {
	if err != nil {
		switch {
		case errors.Is(err, ErrBreakerOpen):
			return semconv.ReasonBreakerOpen
		case errors.Is(err, ErrBulkheadFull):
			return "" // every instance shares the bulkhead; another attempt would only queue
		case errors.Is(err, ErrDeadlineTooShort):
			return "" // a later attempt would have even less time
		case notSent(err):
			return semconv.ReasonConnection
		case !replayable:
			return ""
		case errors.Is(err, ErrTimeout):
			return semconv.ReasonTimeout
		case isConnectionError(err):
			return semconv.ReasonConnection
		}
		return ""
	}
	if !replayable {
		return ""
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return semconv.ReasonStatus5xx
	case http.StatusTooManyRequests:
		return semconv.ReasonStatus429
	}
	return ""
}

func isConnectionError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// classify turns an attempt's result into a breaker outcome. ctx is the context the attempt was
// started with from the breaker's point of view: if it is done, the caller (or a winning hedge, or the
// overall deadline) ended the attempt, and the callee is not to blame.
func classify(ctx context.Context, resp *http.Response, err error) Outcome {
	if err != nil {
		if ctx.Err() != nil || isLocalRejection(err) || errors.Is(err, context.Canceled) {
			return Ignored
		}
		return Failure
	}
	switch resp.StatusCode {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return Failure
	}
	return Success
}

// ParseRetryAfter parses a Retry-After header value (RFC 9110 §10.2.3): delay seconds or an HTTP date,
// relative to now. It returns false for an empty or malformed value; a date in the past gives 0.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
