package resilience

import (
	"fmt"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/resilience/policy"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Dependency holds the resilience state of calls to one dependency (a named service): its retry
// budget, its dependency-wide breaker, its bulkhead and one breaker per instance. It builds the client
// chain (docs/resilience.md) in two halves around a balancer:
//
//	Wrap:     dependency breaker -> overall timeout -> retry (budgeted) -> hedge (same budget) -> next
//	          (next is the balancer, which picks an instance for every attempt)
//	Instance: instance breaker -> minimum attempt time -> per-attempt timeout -> bulkhead ->
//	          deadline header -> next
//	          (installed by the balancer for each instance: lb.WithInstancePolicy)
//
// The span and the HTTP client metrics sit above Wrap (the telemetry package's client
// instrumentation); this package adds its own counters and span events. A Dependency is safe for
// concurrent use. It is the discovery.InstancePolicy a balancer installs on its instances.
type Dependency struct {
	name     string
	cfg      Config
	opts     []Option
	tel      *instruments
	budget   *policy.Budget
	breaker  *policy.Breaker
	bulkhead *policy.Bulkhead
	instCfg  policy.BreakerConfig
	classify discovery.Classifier
}

var _ discovery.InstancePolicy = (*Dependency)(nil)

// NewDependency validates cfg and returns the state for calls to the dependency name.
func NewDependency(name string, cfg Config, opts ...Option) (*Dependency, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("resilience: dependency %q: %w", name, err)
	}
	on, _ := parseRetryOn(cfg.RetryOn) // checked by Validate
	opts = append([]Option{withDependency(name)}, opts...)
	o := newOptions(opts)
	tel := o.instruments()
	classify := on.wrap(o.classify)
	// Every policy shares one set of instruments and one classifier.
	opts = append(opts, optionFunc(func(o *options) { o.tel, o.classify = tel, classify }))
	d := &Dependency{
		name: name, cfg: cfg, opts: opts, tel: tel, classify: classify,
		breaker:  newBreaker(cfg.dependencyBreaker(), "", scopeDependency, tel),
		bulkhead: policy.NewBulkhead(cfg.MaxConcurrent, cfg.MaxConcurrentWait),
		instCfg:  cfg.instanceBreaker(),
	}
	if cfg.Retries > 0 || cfg.hedging() {
		d.budget = policy.NewBudget(cfg.BudgetRatio, cfg.BudgetMinPerSecond, cfg.BudgetWindow)
	}
	return d, nil
}

// Wrap returns the outer half of the chain around next, normally a balancer transport.
func (d *Dependency) Wrap(next http.RoundTripper) http.RoundTripper {
	mws := []Middleware{func(next http.RoundTripper) http.RoundTripper {
		return wrapBreaker(d.breaker, "", d.tel, d.classify, next)
	}}
	if !d.overallImplied() {
		mws = append(mws, timeoutPolicy(d.cfg.Timeout, d.opts...))
	}
	mws = append(mws, retryPolicy(d.cfg.retryConfig(), d.budget, d.opts...))
	if d.cfg.hedging() {
		mws = append(mws, hedgePolicy(d.cfg.hedgeConfig(), d.budget, d.opts...))
	}
	return Chain(next, mws...)
}

// overallImplied reports whether the attempts alone already end every call within the overall
// Timeout: MaxAttempts attempt timeouts plus the longest possible wait before each retry. Then the
// overall timer can never fire first and is left out, saving a context timer per call. With the defaults
// (3 × 2 s + 2 × max(1 s, 2 s) = 10 s) it is implied.
func (d *Dependency) overallImplied() bool {
	c := d.cfg
	if c.Timeout <= 0 {
		return true
	}
	if c.AttemptTimeout <= 0 {
		return false
	}
	attempts := time.Duration(c.Retries + 1)
	wait := max(c.RetryMaxDelay, c.RetryAfterMax)
	if c.RetryAfterMax == 0 {
		wait = max(c.RetryMaxDelay, defaultRetryAfterMax)
	}
	return attempts*c.AttemptTimeout+(attempts-1)*wait <= c.Timeout
}

// Instance returns the per-instance half of the chain for the instance with the given id around next
// (normally the shared *http.Transport). With a breaker, the result is a discovery.InstanceTransport
// whose Available reports whether the breaker lets calls through; discovery/lb skips the instance
// while it is false. Each call
// makes a new breaker owned by the returned transport, so breakers of instances that left are
// garbage collected with their transport (no map keyed by instance ids to bound).
func (d *Dependency) Instance(id string, next http.RoundTripper) http.RoundTripper {
	return wrapBreaker(newBreaker(d.instCfg, id, scopeInstance, d.tel), id, d.tel, d.classify, d.attempt(next, id))
}

// Classify is the dependency's classifier: WithClassifier's (default discovery.Classify) with
// Config.RetryOn applied. Give it to the balancer (lb.WithClassifier(d.Classify)) so that outlier
// ejection counts what the breakers count.
func (d *Dependency) Classify(resp *http.Response, err error) discovery.Class {
	return d.classify(resp, err)
}

// attempt returns the per-attempt layers without a breaker: the minimum attempt time (an attempt
// whose caller's deadline leaves less than MinAttemptTime is refused with ErrDeadlineTooShort),
// per-attempt timeout, bulkhead and deadline header, run as one layer (see attemptTransport) with
// the behaviour of Chain(next, timeoutPolicy(AttemptTimeout), wrapBulkhead, propagateDeadline(DeadlineMargin)).
func (d *Dependency) attempt(next http.RoundTripper, instance string) http.RoundTripper {
	if d.cfg.AttemptTimeout <= 0 && d.bulkhead == nil && !d.cfg.PropagateDeadline && d.tel.tracer == nil &&
		d.cfg.MinAttemptTime <= 0 {
		return next
	}
	t := &attemptTransport{
		timeout:    d.cfg.AttemptTimeout,
		minAttempt: d.cfg.MinAttemptTime,
		bulkhead:   d.bulkhead,
		propagate:  d.cfg.PropagateDeadline,
		margin:     d.cfg.DeadlineMargin,
		ownValue:   timeoutValue(d.cfg.AttemptTimeout, d.cfg.DeadlineMargin),
		next:       next,
		tel:        d.tel,
		tracer:     d.tel.tracer,
		spanAttrs:  []attribute.KeyValue{attribute.String(semconv.AttrPeerService, d.name)},
	}
	if instance != "" {
		t.spanAttrs = append(t.spanAttrs, attribute.String(semconv.AttrInstance, instance))
	}
	return t
}

// NewTransport returns base wrapped in the whole chain for a dependency reached at a single address
// (no balancer): dependency breaker, overall timeout, retry, hedge, per-attempt timeout, bulkhead and
// deadline propagation. With a balancer, use NewDependency, Wrap and Instance.
func NewTransport(base http.RoundTripper, name string, cfg Config, opts ...Option) (http.RoundTripper, error) {
	d, err := NewDependency(name, cfg, opts...)
	if err != nil {
		return nil, err
	}
	return d.Wrap(d.attempt(base, "")), nil
}
