package resilience

import (
	"context"
	"errors"
	"net/http"

	"github.com/failsafe-go/failsafe-go/bulkhead"

	"github.com/cloudchassis/kit/internal/eofbody"
	"github.com/cloudchassis/kit/resilience/policy"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// acquire takes a permit of b (nil: no limit) for an attempt. A full bulkhead gives a
// *RejectedError matching ErrBulkheadFull, reported to tel; a done ctx its error. Each nil return
// must be paired with b.Release. A permit is held until the response body is closed or read to EOF.
func acquire(ctx context.Context, b *policy.Bulkhead, tel *instruments) error {
	err := b.Acquire(ctx)
	if err == nil || !errors.Is(err, bulkhead.ErrFull) {
		return err
	}
	tel.reject(ctx, semconv.ReasonBulkheadFull, "")
	return &RejectedError{Reason: semconv.ReasonBulkheadFull}
}

// wrapBulkhead is the bulkhead b as a Middleware.
func wrapBulkhead(b *policy.Bulkhead, tel *instruments) Middleware {
	return func(next http.RoundTripper) http.RoundTripper {
		if b == nil {
			return next
		}
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			if err := acquire(req.Context(), b, tel); err != nil {
				closeRequestBody(req) // a RoundTripper closes the body, also when it refuses
				return nil, err
			}
			resp, err := next.RoundTrip(req)
			if err != nil {
				b.Release()
				return nil, err
			}
			eofbody.After(resp, b)
			return resp, nil
		})
	}
}
