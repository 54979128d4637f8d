package resilience

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/cloudchassis/kit/internal/eofbody"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// timeoutPolicy bounds each call through it to d: an overall timeout above Retry, a per-attempt timeout
// below it (Dependency fuses the per-attempt one into attemptTransport). When d expires the call fails with a *RejectedError matching ErrTimeout (and
// context.DeadlineExceeded); when the caller's own, earlier deadline expires the caller's context
// error is returned unchanged. The timer keeps running until the response body is closed or read to
// its end, so a slow body is bounded too. d <= 0 returns next unchanged.
func timeoutPolicy(d time.Duration, opts ...Option) Middleware {
	tel := newOptions(opts).instruments()
	return func(next http.RoundTripper) http.RoundTripper {
		if d <= 0 {
			return next
		}
		return &timeoutTransport{d: d, next: next, tel: tel}
	}
}

// errOwnTimeout is the cancellation cause that tells our timer apart from the caller's deadline.
var errOwnTimeout = errors.New("resilience: own timeout")

type timeoutTransport struct {
	d    time.Duration
	next http.RoundTripper
	tel  *instruments
}

func (t *timeoutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	parent := req.Context()
	if dl, ok := parent.Deadline(); ok && time.Until(dl) <= t.d {
		// The caller's deadline comes first: a second timer would never fire.
		return t.next.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeoutCause(parent, t.d, errOwnTimeout)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		expired := context.Cause(ctx) == errOwnTimeout && parent.Err() == nil
		cancel()
		if expired {
			t.tel.reject(parent, semconv.ReasonTimeout, "")
			return nil, &RejectedError{Reason: semconv.ReasonTimeout}
		}
		return nil, err
	}
	eofbody.After(resp, eofbody.Func(cancel))
	return resp, nil
}
