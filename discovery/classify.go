package discovery

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
)

// Class is what one attempt's result means to the client's policies. The balancer (discovery/lb)
// and every resilience policy read the same Class, so that they agree on what failed:
//
//	Retryable  retry and hedge try again (elsewhere), fallback answers
//	Failure    breakers count a failure, outlier ejection counts it against the instance
//	Unsent     the request never reached the callee: a retry is safe for any method
//	Local      refused in this process (open breaker, full bulkhead): nothing is recorded
//
// docs/resilience.md has the table of defaults (Classify).
type Class struct {
	Retryable bool
	Failure   bool
	Unsent    bool
	Local     bool
}

// Classifier classifies one attempt's result: a response (err nil) or an error (resp nil). It must be
// safe for concurrent use and cheap: it runs in every layer on every attempt.
type Classifier func(resp *http.Response, err error) Class

// ClassedError is an error that knows its own Class, such as resilience's rejections. Classify uses
// the first one in an error's chain.
type ClassedError interface {
	error
	Class() Class
}

// Classify is the default Classifier:
//   - 502, 503 and 504 are retryable failures; 429 is retryable, not a failure (the instance is
//     healthy and shedding); other 5xx except 501 are failures, not retryable; the rest is success;
//   - an error with a Class (ClassedError) has that Class;
//   - context.Canceled is nothing (the caller gave up);
//   - a refused connection or a failed dial is an unsent, retryable failure;
//   - other network errors, EOF, resets and timeouts are retryable failures; any other error is a
//     failure.
func Classify(resp *http.Response, err error) Class {
	if err == nil {
		if resp == nil {
			return Class{}
		}
		return classifyStatus(resp.StatusCode)
	}
	var ce ClassedError
	switch {
	case errors.As(err, &ce):
		return ce.Class()
	case errors.Is(err, context.Canceled):
		return Class{}
	case notSent(err):
		return Class{Retryable: true, Failure: true, Unsent: true}
	case connectionError(err):
		return Class{Retryable: true, Failure: true}
	}
	return Class{Failure: true}
}

func classifyStatus(code int) Class {
	switch {
	case code == http.StatusBadGateway, code == http.StatusServiceUnavailable, code == http.StatusGatewayTimeout:
		return Class{Retryable: true, Failure: true}
	case code == http.StatusTooManyRequests:
		return Class{Retryable: true}
	case code >= 500 && code != http.StatusNotImplemented:
		return Class{Failure: true}
	}
	return Class{}
}

// notSent reports whether err proves the request never left this process: a refused connection or
// a failed dial.
func notSent(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// connectionError reports a broken or timed-out exchange (context.DeadlineExceeded is a net.Error).
func connectionError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
