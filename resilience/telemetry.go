package resilience

import (
	"context"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/resilience/policy"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Metric names, attributes and span events are those of telemetry/semconv (docs/telemetry.md, which
// lists the ones this package emits); docs/resilience.md says when each is recorded.

// Option configures telemetry and naming of this package's policies.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	mp         metric.MeterProvider
	tp         trace.TracerProvider
	dependency string
	tel        *instruments
	classify   discovery.Classifier
}

// WithMeterProvider records metrics through mp. Default: a no-op provider (this package never reads
// OTel globals behind the caller's back).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.mp = mp })
}

// WithTracerProvider starts one span per attempt (semconv.SpanAttempt, a child of the caller's span)
// through tp, when the call is sampled: retries and hedges then show in the trace with the instance
// each went to and its outcome. Without it no spans are started; span events are still added to a
// recording span found in the context.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(o *options) { o.tp = tp })
}

// withDependency names the dependency on metrics (attribute peer.service).
func withDependency(name string) Option {
	return optionFunc(func(o *options) { o.dependency = name })
}

// WithClassifier replaces discovery.Classify, for every policy built with the option: what retry and
// hedge try again, what fallback answers and what breakers count as failures. Give the same
// classifier to the balancer (lb.WithClassifier, or Dependency.Classify) so that outlier ejection
// agrees. CLIENT_<NAME>_RETRY_ON (Config.RetryOn) still decides what is retried.
func WithClassifier(c discovery.Classifier) Option {
	return optionFunc(func(o *options) { o.classify = c })
}

func newOptions(opts []Option) *options {
	o := &options{classify: discovery.Classify}
	for _, op := range opts {
		op.apply(o)
	}
	if o.classify == nil {
		o.classify = discovery.Classify
	}
	return o
}

// instruments are created once per policy (once per Dependency, shared by its policies); every
// attribute set is prebuilt so the hot path adds no allocations (metric.WithAttributeSet in a
// pre-made slice).
type instruments struct {
	tracer      trace.Tracer // nil without WithTracerProvider
	obs         *observed
	retries     metric.Int64Counter
	hedges      metric.Int64Counter
	hedgesWon   metric.Int64Counter
	rejections  metric.Int64Counter
	transitions metric.Int64Counter

	peer           attribute.KeyValue // peer.service
	retryOpts      map[string][]metric.AddOption
	rejectOpts     map[string][]metric.AddOption
	transitionOpts [3][3][]metric.AddOption // [from][to], indexed like breakerStates
	peerOpts       []metric.AddOption
}

// Attempt kinds, the indexes of observed.attempts.
const (
	attemptFirst = iota
	attemptRetry
	attemptHedge
)

var attemptKinds = [...]string{attemptFirst: semconv.AttemptFirst, attemptRetry: semconv.AttemptRetry, attemptHedge: semconv.AttemptHedge}

var retryReasons = []string{semconv.ReasonStatus5xx, semconv.ReasonStatus429, semconv.ReasonTimeout, semconv.ReasonConnection, semconv.ReasonBreakerOpen}

var rejectReasons = []string{semconv.ReasonBreakerOpen, semconv.ReasonBudgetExhausted, semconv.ReasonBulkheadFull, semconv.ReasonTimeout, semconv.ReasonDeadlineTooShort}

// breakerStates are the states in the order of the prebuilt attribute sets (their values).
var breakerStates = [3]policy.State{policy.Closed, policy.Open, policy.HalfOpen}

// stateName maps a breaker state to its semconv value.
func stateName(s policy.State) string {
	switch s {
	case policy.Open:
		return semconv.BreakerOpen
	case policy.HalfOpen:
		return semconv.BreakerHalfOpen
	}
	return semconv.BreakerClosed
}

func (o *options) instruments() *instruments {
	if o.tel != nil {
		return o.tel
	}
	mp := o.mp
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter(semconv.ScopeResilience)
	t := &instruments{obs: &observed{}, peer: attribute.String(semconv.AttrPeerService, o.dependency)}
	if o.tp != nil {
		t.tracer = o.tp.Tracer(semconv.ScopeResilience)
	}
	// Creating instruments only fails on invalid names, which are constants here; a failed instrument
	// is a no-op, so the errors are deliberately dropped.
	attempts, _ := m.Int64ObservableCounter(semconv.MetricClientAttempts, metric.WithUnit(semconv.UnitAttempt),
		metric.WithDescription("Attempts sent, by kind: first, retry or hedge."))
	state, _ := m.Int64ObservableGauge(semconv.MetricBreakerState, metric.WithUnit(semconv.UnitState),
		metric.WithDescription("1 for the current state of each circuit breaker, 0 for the two others."))
	tokens, _ := m.Int64ObservableGauge(semconv.MetricRetryBudgetTokens, metric.WithUnit(semconv.UnitAttempt),
		metric.WithDescription("Retries and hedges the retry budget allows now."))
	t.retries, _ = m.Int64Counter(semconv.MetricRetryAttempts, metric.WithUnit(semconv.UnitAttempt),
		metric.WithDescription("Retries sent, by the reason the previous attempt failed."))
	t.hedges, _ = m.Int64Counter(semconv.MetricHedgesSent, metric.WithUnit(semconv.UnitRequest),
		metric.WithDescription("Hedged requests sent."))
	t.hedgesWon, _ = m.Int64Counter(semconv.MetricHedgesWon, metric.WithUnit(semconv.UnitRequest),
		metric.WithDescription("Hedged requests whose response was used."))
	// The description is discovery/lb's too: both scopes count into this name, and the Prometheus
	// exporter merges series of one name only when their metadata agree.
	t.rejections, _ = m.Int64Counter(semconv.MetricClientRejections, metric.WithUnit(semconv.UnitRequest),
		metric.WithDescription("Calls refused locally before reaching the network, by reason."))
	t.transitions, _ = m.Int64Counter(semconv.MetricBreakerTransitions, metric.WithUnit(semconv.UnitTransition),
		metric.WithDescription("Circuit breaker state changes."))

	set := func(kvs ...attribute.KeyValue) []metric.AddOption {
		return []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(append([]attribute.KeyValue{t.peer}, kvs...)...))}
	}
	t.peerOpts = set()
	t.retryOpts = make(map[string][]metric.AddOption, len(retryReasons))
	for _, r := range retryReasons {
		t.retryOpts[r] = set(attribute.String(semconv.AttrRetryReason, r))
	}
	t.rejectOpts = make(map[string][]metric.AddOption, len(rejectReasons))
	for _, r := range rejectReasons {
		t.rejectOpts[r] = set(attribute.String(semconv.AttrRejectionReason, r))
	}
	for i, from := range breakerStates {
		for j, to := range breakerStates {
			t.transitionOpts[i][j] = set(attribute.String(semconv.AttrBreakerFrom, stateName(from)),
				attribute.String(semconv.AttrBreakerTo, stateName(to)))
		}
	}

	var kinds [len(attemptKinds)]metric.ObserveOption
	for i, k := range attemptKinds {
		kinds[i] = metric.WithAttributeSet(attribute.NewSet(t.peer, attribute.String(semconv.AttrAttemptKind, k)))
	}
	budgetOpt := metric.WithAttributeSet(attribute.NewSet(t.peer))
	obs := t.obs // the callback must not reach t, or the cleanup below would never run
	if reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for i := range obs.attempts {
			o.ObserveInt64(attempts, obs.attempts[i].Load(), kinds[i])
		}
		if b := obs.budget.Load(); b != nil {
			o.ObserveInt64(tokens, int64(max(math.Floor(b.Tokens()), 0)), budgetOpt)
		}
		obs.observeBreakers(o, state)
		return nil
	}, attempts, state, tokens); err == nil {
		runtime.AddCleanup(t, func(r metric.Registration) { _ = r.Unregister() }, reg)
	}
	o.tel = t
	return t
}

// observed is what the collection callback reads: attempt counts, the retry budget and the live
// breakers.
//
// Attempts are counted on every call, and an Int64Counter.Add with an attribute set costs far more
// in the OTel SDK (attribute deduplication and a map lookup) than an atomic add, so they are atomics
// reported by an observable counter. The price: attempts carry no exemplars.
//
// Breakers are held weakly: a per-instance breaker belongs to its instance's transport, and must be
// collected with it when the instance leaves the snapshot. Dead entries are dropped at collection,
// and on registration when the slice is full (without a reader nothing collects), so the list stays
// within twice the live breakers.
// An instance that left and came back, or moved, can have a second breaker under its id until the old
// one is collected: entries stay in registration order and the SDK keeps the last observation of an
// attribute set, so the newest breaker's state is the one reported.
type observed struct {
	attempts [len(attemptKinds)]atomic.Int64
	budget   atomic.Pointer[policy.Budget]
	mu       sync.Mutex
	breakers []breakerRef
}

type breakerRef struct {
	b      weak.Pointer[policy.Breaker]
	states [3]metric.ObserveOption // peer.service, chassis.breaker.instance and each of breakerStates
}

func (s *observed) observeBreakers(o metric.Observer, gauge metric.Int64Observable) {
	s.mu.Lock()
	defer s.mu.Unlock()
	live := s.breakers[:0]
	for _, r := range s.breakers {
		b := r.b.Value()
		if b == nil {
			continue
		}
		cur := int(b.State()) // an atomic load: never waits for the breaker's lock
		for i, opt := range r.states {
			v := int64(0)
			if i == cur {
				v = 1
			}
			o.ObserveInt64(gauge, v, opt)
		}
		live = append(live, r)
	}
	clear(s.breakers[len(live):])
	s.breakers = live
}

// addBreaker registers b for the state gauge, named instance.
func (t *instruments) addBreaker(b *policy.Breaker, instance string) {
	r := breakerRef{b: weak.Make(b)}
	for i, st := range breakerStates {
		r.states[i] = metric.WithAttributeSet(attribute.NewSet(t.peer,
			attribute.String(semconv.AttrBreakerInstance, instance),
			attribute.String(semconv.AttrBreakerState, stateName(st))))
	}
	s := t.obs
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.breakers) == cap(s.breakers) {
		live := s.breakers[:0]
		for _, r := range s.breakers {
			if r.b.Value() != nil {
				live = append(live, r)
			}
		}
		clear(s.breakers[len(live):])
		s.breakers = live
	}
	s.breakers = append(s.breakers, r)
}

// observeBudget reports b's tokens on the budget gauge. A Dependency's Retry and Hedge share one
// budget; the first one registered is kept.
func (t *instruments) observeBudget(b *policy.Budget) {
	if b != nil {
		t.obs.budget.CompareAndSwap(nil, b)
	}
}

func (t *instruments) attempt(_ context.Context, kind int) {
	t.obs.attempts[kind].Add(1)
}

// retry records a retry about to be sent: attempt is its 1-based number, backoff the wait before it.
func (t *instruments) retry(ctx context.Context, reason string, attempt int, backoff time.Duration) {
	t.retries.Add(ctx, 1, t.retryOpts[reason]...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(semconv.EventRetry, trace.WithAttributes(
			attribute.Int(semconv.AttrAttempt, attempt),
			attribute.String(semconv.AttrRetryReason, reason),
			attribute.Float64(semconv.AttrBackoff, backoff.Seconds())))
	}
}

// hedge records a hedge sent as the call's attempt number attempt (1-based: the first hedge is 2).
func (t *instruments) hedge(ctx context.Context, attempt int) {
	t.hedges.Add(ctx, 1, t.peerOpts...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(semconv.EventHedge, trace.WithAttributes(attribute.Int(semconv.AttrAttempt, attempt)))
	}
}

func (t *instruments) hedgeWon(ctx context.Context) {
	t.hedgesWon.Add(ctx, 1, t.peerOpts...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(semconv.EventHedgeWon)
	}
}

// reject records a local refusal; instance is the refusing instance's breaker name, or "".
func (t *instruments) reject(ctx context.Context, r string, instance string) {
	t.rejections.Add(ctx, 1, t.rejectOpts[r]...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		reason := attribute.String(semconv.AttrRejectionReason, r)
		if instance == "" {
			span.AddEvent(semconv.EventRejected, trace.WithAttributes(reason))
		} else {
			span.AddEvent(semconv.EventRejected, trace.WithAttributes(reason, attribute.String(semconv.AttrInstance, instance)))
		}
	}
}

// breakerTransition counts a state change.
func (t *instruments) breakerTransition(from, to policy.State) {
	t.transitions.Add(context.Background(), 1, t.transitionOpts[from][to]...)
}

// transitionEvent adds a chassis.breaker.transition event to ctx's span for a change the call
// caused; instance is the breaker's AttrBreakerInstance.
func transitionEvent(ctx context.Context, instance string, from, to policy.State) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(semconv.EventBreakerTransition, trace.WithAttributes(
			attribute.String(semconv.AttrBreakerFrom, stateName(from)),
			attribute.String(semconv.AttrBreakerTo, stateName(to)),
			attribute.String(semconv.AttrInstance, instance)))
	}
}
