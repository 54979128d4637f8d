package resilience

import (
	"context"
	"net/http"
	"time"
)

// TimeoutHeader carries the caller's remaining time budget to the callee, in whole milliseconds,
// already reduced by the caller's margin. It is relative (like gRPC's grpc-timeout and Envoy's
// x-envoy-expected-rq-timeout-ms), so clock skew between hosts does not matter.
const TimeoutHeader = "Chassis-Timeout-Ms"

// propagateDeadline sets TimeoutHeader on requests whose context has a deadline: the time left minus
// margin, at least 1 ms. Place it below the per-attempt Timeout so each attempt sends its own budget.
// Requests without a deadline are passed on untouched; the caller's request is never modified.
func propagateDeadline(margin time.Duration) Middleware {
	return func(next http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			dl, ok := req.Context().Deadline()
			if !ok {
				return next.RoundTrip(req)
			}
			r := *req // shallow copy: the header is replaced, not mutated
			r.Header = req.Header.Clone()
			if r.Header == nil {
				r.Header = make(http.Header, 1)
			}
			r.Header[TimeoutHeader] = []string{timeoutValue(time.Until(dl), margin)}
			return next.RoundTrip(&r)
		})
	}
}

// parseTimeoutHeader parses a TimeoutHeader value: a positive decimal number of milliseconds, in
// ASCII digits only (at most about 292 years, the range of time.Duration). It never allocates, also
// for a malformed value: every request a server receives may carry one.
func parseTimeoutHeader(v string) (time.Duration, bool) {
	const maxMs = int64(1<<63-1) / int64(time.Millisecond)
	if v == "" {
		return 0, false
	}
	var ms int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if ms = ms*10 + int64(c-'0'); ms > maxMs {
			return 0, false
		}
	}
	if ms == 0 {
		return 0, false
	}
	return time.Duration(ms) * time.Millisecond, true
}

// PropagatedTimeout is the server side of deadline propagation: the time budget of a request with
// header h, the caller's TimeoutHeader capped by limit (the server's own maximum). Without the
// header, or with a malformed one, limit applies alone; limit <= 0 means "no cap" (the header
// alone). 0 means no deadline. chassis' request core puts it on the request context (lazily, see
// chassis/reqctx.go); WithPropagatedDeadline does for any other server.
func PropagatedTimeout(h http.Header, limit time.Duration) time.Duration {
	d := limit
	if v := h[TimeoutHeader]; len(v) > 0 {
		if t, ok := parseTimeoutHeader(v[0]); ok && (d <= 0 || t < d) {
			d = t
		}
	}
	return max(d, 0)
}

// WithPropagatedDeadline returns ctx with the deadline PropagatedTimeout gives, for servers not
// built with chassis (wrap each request in a middleware). An earlier deadline already on ctx is
// kept. Without a deadline, ctx is returned with a no-op cancel and nothing is allocated. The
// returned cancel must be called, as for context.WithTimeout.
func WithPropagatedDeadline(ctx context.Context, h http.Header, limit time.Duration) (context.Context, context.CancelFunc) {
	d := PropagatedTimeout(h, limit)
	if d == 0 {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, d)
}

func noCancel() {}
