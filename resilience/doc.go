// Package resilience makes service-to-service HTTP calls survive dead, slow and flapping instances
// without turning a partial outage into a retry storm: timeouts (overall and per attempt), retries with
// full-jitter backoff under a retry budget, hedging, circuit breakers per instance and per dependency,
// a bulkhead, a fallback, and deadline propagation. The state machines are in resilience/policy, on
// failsafe-go's permit APIs.
//
// Start with NewDependency: it reads a Config (env-tagged, read by chassis per dependency as
// CLIENT_<NAME>_*) and builds the client chain around a balancer:
//
//	d, _ := resilience.NewDependency("pricing", cfg)
//	bal, _ := lb.New("pricing", watcher, lb.WithInstancePolicy(d))
//	client := &http.Client{Transport: d.Wrap(lb.NewTransport(bal))}  // http://pricing/...
//
// Without a balancer, NewTransport wraps a single base transport. Every policy reads results through
// one classifier (discovery.Classify by default, WithClassifier, Config.RetryOn); docs/resilience.md
// has its table. Fallback is a Middleware to add by hand; resilience/kitendpoint has the policies as
// go-kit endpoint middlewares. On the server, WithPropagatedDeadline reads the propagated deadline.
//
// Every rejection matches a sentinel with errors.Is (ErrBreakerOpen, ErrBudgetExhausted,
// ErrBulkheadFull, ErrTimeout, ErrDeadlineTooShort) and a *RejectedError with errors.As, and shows
// as a span event on the call it refused. All types are safe for concurrent use. docs/resilience.md
// has defaults, environment variables and metric names.
package resilience
