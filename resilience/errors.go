package resilience

import (
	"context"
	"time"

	"github.com/failsafe-go/failsafe-go/budget"
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/timeout"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// sentinel is a matchable error that also matches the failsafe-go error it stands for, so code written
// against failsafe-go (errors.Is(err, circuitbreaker.ErrOpen)) keeps working.
type sentinel struct {
	msg  string
	base error
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.base }

// Sentinel errors. Every rejection a policy makes matches exactly one of them with errors.Is, also
// through the *url.Error an http.Client wraps around a transport error. The balancer adds its own
// lb.ErrNoInstances.
var (
	// ErrBreakerOpen: a circuit breaker (per instance or per dependency) is open. Matches
	// circuitbreaker.ErrOpen too. Nothing was sent.
	ErrBreakerOpen error = &sentinel{"resilience: circuit breaker open", circuitbreaker.ErrOpen}
	// ErrBudgetExhausted: a retry or hedge was needed but the retry budget had no tokens left. It is
	// joined to the last attempt's error (the call failed for that reason first). Matches budget.ErrExceeded.
	ErrBudgetExhausted error = &sentinel{"resilience: retry budget exhausted", budget.ErrExceeded}
	// ErrBulkheadFull: the dependency already has its maximum of concurrent calls. Nothing was sent.
	// Matches bulkhead.ErrFull.
	ErrBulkheadFull error = &sentinel{"resilience: bulkhead full", bulkhead.ErrFull}
	// ErrTimeout: a per-attempt or overall timeout set by this package expired. Matches
	// timeout.ErrExceeded and context.DeadlineExceeded.
	ErrTimeout error = &timeoutSentinel{sentinel{"resilience: timeout", timeout.ErrExceeded}}
	// ErrDeadlineTooShort: the caller's deadline left less than the minimum attempt time, too little
	// for the callee to do anything useful. Nothing was sent, and the call is not retried. Matches
	// context.DeadlineExceeded, as the caller's deadline is as good as expired.
	ErrDeadlineTooShort error = &timeoutSentinel{sentinel{"resilience: deadline too short for an attempt", nil}}
)

type timeoutSentinel struct{ sentinel }

// Is lets errors.Is(err, context.DeadlineExceeded) hold for our timeouts, as it does for
// the plain context error net/http would otherwise return.
func (e *timeoutSentinel) Is(target error) bool { return target == context.DeadlineExceeded }

// Timeout makes ErrTimeout a net.Error-style timeout (os.IsTimeout and url.Error.Timeout report true).
func (e *timeoutSentinel) Timeout() bool { return true }

// RejectedError carries the data of one rejection: which policy (Reason, a semconv.Reason* value:
// breaker_open, bulkhead_full, timeout or deadline_too_short), which instance (empty for
// dependency-wide policies) and, for an open breaker, how long until it lets a probe through.
// Unwrap returns the sentinel of the reason, so errors.Is(err, ErrBreakerOpen) and
// errors.As(err, &rejected) both work.
type RejectedError struct {
	Reason   string
	Instance string
	// RetryIn is the remaining open delay of a breaker, 0 when unknown or not applicable.
	RetryIn time.Duration
}

func (e *RejectedError) Error() string {
	msg := "resilience: rejected: " + e.Reason
	if s := e.Unwrap(); s != nil {
		msg = s.Error()
	}
	if e.Instance != "" {
		return msg + " (instance " + e.Instance + ")"
	}
	return msg
}

// ErrorType returns the reason, so that telemetry's client instrumentation records it as error.type.
func (e *RejectedError) ErrorType() string { return e.Reason }

// Unwrap returns the sentinel of the reason (ErrBreakerOpen, ErrBulkheadFull, ...).
func (e *RejectedError) Unwrap() error {
	switch e.Reason {
	case semconv.ReasonBreakerOpen:
		return ErrBreakerOpen
	case semconv.ReasonBulkheadFull:
		return ErrBulkheadFull
	case semconv.ReasonTimeout:
		return ErrTimeout
	case semconv.ReasonDeadlineTooShort:
		return ErrDeadlineTooShort
	}
	return nil
}

// Timeout reports whether the rejection is a timeout (our timer, or a deadline too short to
// attempt), for net.Error-style checks.
func (e *RejectedError) Timeout() bool {
	return e.Reason == semconv.ReasonTimeout || e.Reason == semconv.ReasonDeadlineTooShort
}

// Class places the rejection in the shared classification (discovery.Class): a timeout is a
// retryable failure of the callee; the others were made in this process and sent nothing (Local), and
// only an open breaker is retryable, on another instance.
func (e *RejectedError) Class() discovery.Class {
	switch e.Reason {
	case semconv.ReasonTimeout:
		return discovery.Class{Retryable: true, Failure: true}
	case semconv.ReasonBreakerOpen:
		return discovery.Class{Retryable: true, Unsent: true, Local: true}
	}
	return discovery.Class{Unsent: true, Local: true}
}
