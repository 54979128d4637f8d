package resilience

import (
	"cmp"
	"fmt"
	"net/http"
	"time"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/resilience/policy"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// retryConfig configures retryPolicy (from Config: see its fields).
type retryConfig struct {
	// MaxAttempts counts the first attempt: 3 means up to 2 retries. <= 1 disables retries.
	MaxAttempts int
	// BaseDelay and MaxDelay shape the full-jitter backoff: the n-th retry sleeps a uniformly random
	// time in [0, min(MaxDelay, BaseDelay·2^(n-1))] (AWS Architecture Blog, "Exponential Backoff and Jitter").
	BaseDelay, MaxDelay time.Duration
	// RetryAfterMax caps the Retry-After honoured on 429 and 503; a longer one ends the retries and
	// the response is returned to the caller. 0 means defaultRetryAfterMax.
	RetryAfterMax time.Duration
	// BodyBufferMax bounds the request bodies buffered for replay; 0 means defaultBodyBufferMax.
	BodyBufferMax int64
}

// retryPolicy retries failed attempts through next, which should pick an instance per attempt (a balancer),
// so each retry can land elsewhere. An attempt is retried when the caller's context is live and
//   - it was never sent (connection refused, dial error, instance breaker open): any method;
//   - it timed out, the connection broke, or the answer was 502, 503, 504 or 429: only requests that
//     are Replayable (idempotent method, Idempotency-Key, or MarkRetryable).
//
// Retry-After on 429/503 is honoured up to RetryAfterMax. Each retry that sends load takes a token
// from budget (nil: unbounded); without one the last attempt's result is returned, its error joined
// with ErrBudgetExhausted. Retry deposits every call into budget, also when MaxAttempts is 1, so put
// it above hedgePolicy when both share a budget. Bodies without GetBody are buffered up to BodyBufferMax;
// a longer streamed body is sent once. Responses of abandoned attempts are drained and closed.
// No retry is started when the caller's deadline would expire during the backoff.
func retryPolicy(cfg retryConfig, budget *policy.Budget, opts ...Option) Middleware {
	o := newOptions(opts)
	tel := o.instruments()
	tel.observeBudget(budget)
	return func(next http.RoundTripper) http.RoundTripper {
		r := &retrier{cfg: cfg, budget: budget, next: next, tel: tel, classify: o.classify}
		r.direct, _ = next.(discovery.TriedRoundTripper)
		return r
	}
}

type retrier struct {
	cfg      retryConfig
	budget   *policy.Budget
	next     http.RoundTripper
	direct   discovery.TriedRoundTripper // next, when it takes the Tried directly
	tel      *instruments
	classify discovery.Classifier
}

// send makes one attempt through next, handing the call's Tried to direct (next, when it is a
// discovery.TriedRoundTripper).
func send(next http.RoundTripper, direct discovery.TriedRoundTripper, req *http.Request, tried *discovery.Tried) (*http.Response, error) {
	if direct != nil {
		return direct.RoundTripTried(req, tried)
	}
	return next.RoundTrip(req)
}

func (r *retrier) RoundTrip(req *http.Request) (*http.Response, error) {
	return r.RoundTripTried(req, nil)
}

// RoundTripTried implements discovery.TriedRoundTripper, for a Retry below another retrying layer.
func (r *retrier) RoundTripTried(req *http.Request, tried *discovery.Tried) (*http.Response, error) {
	ctx := req.Context()
	if r.budget != nil {
		r.budget.Deposit()
	}
	r.tel.attempt(ctx, attemptFirst)
	if r.cfg.MaxAttempts <= 1 {
		return send(r.next, r.direct, req, tried)
	}
	replayable := Replayable(req)
	if tried == nil && r.direct != nil {
		tried = new(discovery.Tried) // retries (and hedges below) avoid the instances this call used
	}
	req, canReplay, err := prepareBody(req, cmp.Or(r.cfg.BodyBufferMax, defaultBodyBufferMax))
	if err != nil {
		return nil, fmt.Errorf("resilience: reading request body for replay: %w", err)
	}
	for attempt := 1; ; attempt++ {
		ar := req
		if attempt > 1 {
			if ar, err = attemptRequest(ctx, req, true); err != nil {
				return nil, fmt.Errorf("resilience: request body for retry: %w", err)
			}
		}
		resp, err := send(r.next, r.direct, ar, tried)
		if ctx.Err() != nil || attempt >= r.cfg.MaxAttempts || !canReplay {
			return resp, err
		}
		reason := retryReason(replayable, r.classify(resp, err), resp, err)
		if reason == "" {
			return resp, err
		}
		var wait time.Duration
		if reason != semconv.ReasonBreakerOpen { // nothing was sent: re-pick at once
			wait = r.backoff(attempt)
		}
		if resp != nil {
			if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
				if ra > cmp.Or(r.cfg.RetryAfterMax, defaultRetryAfterMax) {
					return resp, err
				}
				wait = max(wait, ra)
			}
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
			return resp, err
		}
		if reason != semconv.ReasonBreakerOpen && r.budget != nil && !r.budget.TryWithdraw() {
			r.tel.reject(ctx, semconv.ReasonBudgetExhausted, "")
			if err != nil {
				err = fmt.Errorf("%w (retry refused: %w)", err, ErrBudgetExhausted)
			}
			return resp, err
		}
		discard(resp)
		r.tel.retry(ctx, reason, attempt+1, wait)
		r.tel.attempt(ctx, attemptRetry)
		if err := backoff.Sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// backoff returns the full-jitter delay before retry number n (1-based); none without a base delay.
func (r *retrier) backoff(n int) time.Duration {
	if r.cfg.BaseDelay <= 0 {
		return 0
	}
	return backoff.Policy{Base: r.cfg.BaseDelay, Max: cmp.Or(r.cfg.MaxDelay, defaultRetryMaxDelay)}.Delay(n)
}
