package resilience

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/resilience/policy"
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

// retryReason returns why an attempt of class c deserves another attempt, as a semconv retry reason
// (the chassis.retry.reason attribute), or "" if it does not. Called only while the caller's context
// is live.
func retryReason(replayable bool, c discovery.Class, resp *http.Response, err error) string {
	switch {
	case !c.Retryable:
		return ""
	case c.Local:
		return semconv.ReasonBreakerOpen // refused here for one instance: another may take it
	case c.Unsent:
		return semconv.ReasonConnection
	case !replayable:
		return ""
	case err == nil && resp.StatusCode == http.StatusTooManyRequests:
		return semconv.ReasonStatus429
	case err == nil:
		return semconv.ReasonStatus5xx
	case errors.Is(err, context.DeadlineExceeded):
		return semconv.ReasonTimeout
	}
	return semconv.ReasonConnection
}

// outcome turns an attempt's class into a breaker outcome. ctx is the context the attempt was
// started with from the breaker's point of view: if it is done, the caller (or a winning hedge, or the
// overall deadline) ended the attempt, and the callee is not to blame.
func outcome(ctx context.Context, c discovery.Class, err error) policy.Outcome {
	switch {
	case err != nil && ctx.Err() != nil:
		return policy.Ignored
	case c.Failure && !c.Local:
		return policy.Failure
	case err != nil || c.Local:
		return policy.Ignored
	}
	return policy.Success
}

// retryOn is a parsed RETRY_ON list: the results of sent attempts that are retried.
type retryOn struct {
	status              [600]bool
	connection, timeout bool
}

// parseRetryOn parses a RETRY_ON value: a comma-separated list of status codes (503), status classes
// (5xx, 4xx) and the error kinds connection and timeout. "" returns nil: the classifier decides.
func parseRetryOn(v string) (*retryOn, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	r := &retryOn{}
	var bad []string
	for _, tok := range strings.Split(v, ",") {
		tok = strings.ToLower(strings.TrimSpace(tok))
		switch {
		case tok == "connection":
			r.connection = true
		case tok == "timeout":
			r.timeout = true
		case len(tok) == 3 && tok[1:] == "xx" && tok[0] >= '1' && tok[0] <= '5':
			h := int(tok[0]-'0') * 100
			for i := h; i < h+100; i++ {
				r.status[i] = true
			}
		default:
			n, err := strconv.Atoi(tok)
			if err != nil || n < 100 || n > 599 || len(tok) != 3 {
				bad = append(bad, strconv.Quote(tok))
				continue
			}
			r.status[n] = true
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("RETRY_ON=%q: %s: not a status code (100-599), a status class (4xx, 5xx) or one of connection, timeout; e.g. RETRY_ON=502,503,504,429,connection,timeout",
			v, strings.Join(bad, ", "))
	}
	return r, nil
}

// wrap returns base with Retryable of sent attempts decided by r. An attempt that was not sent keeps
// its class: resending it is always safe.
func (r *retryOn) wrap(base discovery.Classifier) discovery.Classifier {
	if r == nil {
		return base
	}
	return func(resp *http.Response, err error) discovery.Class {
		c := base(resp, err)
		switch {
		case c.Local || c.Unsent:
		case err == nil:
			code := resp.StatusCode
			c.Retryable = code >= 100 && code <= 599 && r.status[code]
		case c.Retryable && errors.Is(err, context.DeadlineExceeded):
			c.Retryable = r.timeout
		case c.Retryable:
			c.Retryable = r.connection
		}
		return c
	}
}

// parseRetryAfter parses a Retry-After header value (RFC 9110 §10.2.3): delay seconds or an HTTP date,
// relative to now. It returns false for an empty or malformed value; a date in the past gives 0.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
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
