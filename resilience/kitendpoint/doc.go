// Package kitendpoint offers the resilience policies as go-kit endpoint middlewares, so a go-kit
// service can adopt retries with a budget, circuit breakers, a bulkhead and timeouts without the rest
// of Chassis. Start with Retry and Breaker; they share the errors and state types of package
// resilience (ErrBreakerOpen, ErrBudgetExhausted, ...), so callers match rejections the same way.
//
// Endpoints carry no HTTP status, so a failure is simply a non-nil error; use WithRetryIf to refine.
// All middlewares are safe for concurrent use.
package kitendpoint // import "github.com/cloudchassis/kit/resilience/kitendpoint"
