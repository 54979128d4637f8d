// Package kitendpoint offers the resilience policies as go-kit endpoint middlewares, so a go-kit
// service can adopt retries with a budget, circuit breakers, a bulkhead and timeouts without the rest
// of Chassis. Start with Retry and Breaker, over the state machines of resilience/policy; their
// rejections are resilience's (ErrBreakerOpen, ErrBudgetExhausted, ...), so callers match them the
// same way.
//
// Endpoints carry no HTTP status, so a failure is a non-nil error that discovery.Classify does not
// call local; Retry's retryIf refines what is retried.
// All middlewares are safe for concurrent use.
package kitendpoint // import "github.com/cloudchassis/kit/resilience/kitendpoint"
