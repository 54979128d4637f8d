package kitendpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/go-kit/kit/endpoint"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/resilience"
	"github.com/cloudchassis/kit/resilience/policy"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Retry calls next up to maxAttempts times while it fails with an error retryIf accepts (default:
// any error except a local rejection such as ErrBulkheadFull or ErrBreakerOpen, and except when ctx
// is done), sleeping a full-jitter backoff in [0, min(maxDelay, baseDelay·2^(n-1))) between attempts
// (baseDelay 0: no sleep; maxDelay 0: 10s). Every call deposits into budget and every retry withdraws from it (nil: unbounded); when it is empty the last
// error is returned joined with resilience.ErrBudgetExhausted. Unlike go-kit's lb.Retry, retries
// back off and are bounded by the budget, so a failing dependency sees at most ~1.2× the load.
func Retry(maxAttempts int, baseDelay, maxDelay time.Duration, budget *policy.Budget, retryIf func(error) bool) endpoint.Middleware {
	if retryIf == nil {
		retryIf = defaultRetryIf
	}
	return func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, req any) (any, error) {
			if budget != nil {
				budget.Deposit()
			}
			for attempt := 1; ; attempt++ {
				resp, err := next(ctx, req)
				if err == nil || attempt >= maxAttempts || ctx.Err() != nil || !retryIf(err) {
					return resp, err
				}
				if budget != nil && !budget.TryWithdraw() {
					return resp, fmt.Errorf("%w (retry refused: %w)", err, resilience.ErrBudgetExhausted)
				}
				if baseDelay > 0 {
					d := backoff.Policy{Base: baseDelay, Max: maxDelay}.Delay(attempt)
					if err := backoff.Sleep(ctx, d); err != nil {
						return nil, err
					}
				}
			}
		}
	}
}

func defaultRetryIf(err error) bool { return !discovery.Classify(nil, err).Local }

// Breaker guards next with b: while b is open calls fail at once with a *resilience.RejectedError
// matching resilience.ErrBreakerOpen. An error counts as a failure when discovery.Classify says so
// and ctx is live: not a local rejection from an inner middleware, not context.Canceled.
func Breaker(b *policy.Breaker) endpoint.Middleware {
	return func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, req any) (any, error) {
			if !b.Allow(ctx) {
				return nil, &resilience.RejectedError{Reason: semconv.ReasonBreakerOpen, RetryIn: b.RetryIn()}
			}
			resp, err := next(ctx, req)
			switch c := discovery.Classify(nil, err); {
			case err == nil:
				b.Record(ctx, policy.Success)
			case ctx.Err() != nil, !c.Failure, c.Local:
				b.Record(ctx, policy.Ignored)
			default:
				b.Record(ctx, policy.Failure)
			}
			return resp, err
		}
	}
}

// Bulkhead limits the concurrent calls of next with b (see policy.NewBulkhead); a full bulkhead
// fails with a *resilience.RejectedError matching resilience.ErrBulkheadFull.
func Bulkhead(b *policy.Bulkhead) endpoint.Middleware {
	return func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, req any) (any, error) {
			if err := b.Acquire(ctx); err != nil {
				if errors.Is(err, bulkhead.ErrFull) {
					err = &resilience.RejectedError{Reason: semconv.ReasonBulkheadFull}
				}
				return nil, err
			}
			defer b.Release()
			return next(ctx, req)
		}
	}
}

// Timeout bounds each call of next to d. When d expires first the error matches
// resilience.ErrTimeout (and context.DeadlineExceeded); the caller's own deadline gives its own error.
// next must honour ctx.
func Timeout(d time.Duration) endpoint.Middleware {
	return func(next endpoint.Endpoint) endpoint.Endpoint {
		return func(ctx context.Context, req any) (any, error) {
			tctx, cancel := context.WithTimeoutCause(ctx, d, errOwn)
			defer cancel()
			resp, err := next(tctx, req)
			if err != nil && context.Cause(tctx) == errOwn && ctx.Err() == nil {
				return nil, fmt.Errorf("kitendpoint: after %s: %w", d, resilience.ErrTimeout)
			}
			return resp, err
		}
	}
}

var errOwn = errors.New("kitendpoint: own timeout")
