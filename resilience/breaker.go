package resilience

import (
	"context"
	"errors"
	"net/http"
	"syscall"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/resilience/policy"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

const (
	scopeInstance   = "instance"
	scopeDependency = "dependency"
)

// newBreaker returns a breaker for cfg reporting to tel, or nil when cfg disables it. name is the
// instance ("" for a dependency-wide breaker, reported as "service").
func newBreaker(cfg policy.BreakerConfig, name, scope string, tel *instruments) *policy.Breaker {
	instance := name
	if scope == scopeDependency || name == "" {
		instance = semconv.BreakerInstanceService
	}
	cfg.OnTransition = func(ctx context.Context, from, to policy.State) {
		tel.breakerTransition(from, to)
		transitionEvent(ctx, instance, from, to)
	}
	b := policy.NewBreaker(cfg)
	if b != nil {
		tel.addBreaker(b, instance)
	}
	return b
}

// wrapBreaker is the breaker b of the instance name as a Middleware. The returned RoundTripper is a
// discovery.InstanceTransport, so a balancer skips it while the breaker is open.
func wrapBreaker(b *policy.Breaker, name string, tel *instruments, classify discovery.Classifier, next http.RoundTripper) http.RoundTripper {
	if b == nil {
		return next
	}
	return &breakerTransport{b: b, name: name, tel: tel, classify: classify, next: next}
}

var _ discovery.InstanceTransport = (*breakerTransport)(nil)

type breakerTransport struct {
	b        *policy.Breaker
	name     string
	tel      *instruments
	classify discovery.Classifier
	next     http.RoundTripper
}

func (t *breakerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if !t.b.Allow(ctx) {
		t.tel.reject(ctx, semconv.ReasonBreakerOpen, t.name)
		return nil, &RejectedError{Reason: semconv.ReasonBreakerOpen, Instance: t.name, RetryIn: t.b.RetryIn()}
	}
	resp, err := t.next.RoundTrip(req)
	o := outcome(ctx, t.classify(resp, err), err)
	t.b.Record(ctx, o)
	if o == policy.Failure && errors.Is(err, syscall.ECONNREFUSED) {
		// Nothing listens at the instance's address (a killed process): every call will fail the
		// same way until it is restarted, so open now instead of after BREAKER_FAILURES more picks.
		// The half-open probe after the delay finds the instance when it is back.
		t.b.Trip(ctx)
	}
	return resp, err
}

// Available reports whether the breaker would let a call through now.
func (t *breakerTransport) Available() bool { return t.b.Available() }
