package resilience

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// BreakerConfig configures a circuit breaker. Exactly one way of opening applies:
//   - FailureRate > 0: time based, opens when the failure rate over the sliding Period reaches
//     FailureRate and at least MinCalls calls were recorded in it;
//   - else Window > Failures: opens on Failures failures among the last Window calls (ratio);
//   - else Failures > 0: opens on Failures consecutive failures (count).
//
// Neither Failures nor FailureRate set disables the breaker. An open breaker lets a probe through
// after Delay (jittered by ±20% so breakers that opened together do not probe together); Successes
// successful probes close it, a failed probe opens it again.
type BreakerConfig struct {
	Failures    uint
	Window      uint
	FailureRate float64
	MinCalls    uint
	Period      time.Duration
	Delay       time.Duration
	Successes   uint
}

func (c BreakerConfig) enabled() bool { return c.Failures > 0 || c.FailureRate > 0 }

// State of a breaker.
type State = circuitbreaker.State

// Outcome classifies a finished attempt for a breaker.
type Outcome uint8

const (
	// Success closes a half-open breaker and counts as a success when closed.
	Success Outcome = iota
	// Failure counts against the callee.
	Failure
	// Ignored is neither: the caller cancelled, a local policy refused, or a hedge lost. Kratos #2777
	// counted such outcomes as failures and opened breakers on healthy callees.
	Ignored
)

// Breaker is a circuit breaker for one instance or one dependency. It uses failsafe-go's circuit
// breaker state machine through its permit API (TryAcquirePermit / RecordSuccess / RecordFailure)
// rather than failsafe.Get: the executor allocates on every call, the permit API does not
// (BenchmarkBreaker in this package runs both; docs/architecture.md has the executor's cost).
//
// A Breaker is safe for concurrent use.
type Breaker struct {
	cb       circuitbreaker.CircuitBreaker[any]
	name     string
	instance string // AttrBreakerInstance: name, or "service" for a dependency-wide breaker
	tel      *instruments
	classify discovery.Classifier
	state    atomic.Int32 // mirror of cb's state, read lock-free by Available and the state gauge
	openedAt atomic.Int64 // unix ns at which the open breaker lets a probe through

	// mu serializes the calls into cb that can change its state. failsafe-go runs the state listener
	// synchronously, in the goroutine whose call changed the state, so the transitions recorded in
	// caused while a goroutine holds mu are its call's own: they go on that call's span.
	mu       sync.Mutex
	caused   [2]transition // guarded by mu; a call causes at most two (open -> half_open -> open)
	ncaused  int
	rearming bool // guarded by mu: transitions of release are not reported
}

// transition is one state change of a breaker.
type transition struct{ from, to State }

// NewBreaker returns a breaker for cfg, or nil when cfg disables it (a nil *Breaker allows everything).
// name identifies it in errors and telemetry (chassis.breaker.instance; "" for a dependency-wide
// breaker, reported as "service"). The breaker appears on the state gauge until it is garbage
// collected.
func NewBreaker(cfg BreakerConfig, name string, opts ...Option) *Breaker {
	if !cfg.enabled() {
		return nil
	}
	o := newOptions(opts)
	return newBreaker(cfg, name, scopeInstance, o.instruments(), o.classify)
}

const (
	scopeInstance   = "instance"
	scopeDependency = "dependency"
)

func newBreaker(cfg BreakerConfig, name, scope string, tel *instruments, classify discovery.Classifier) *Breaker {
	if !cfg.enabled() {
		return nil
	}
	b := &Breaker{name: name, instance: name, tel: tel, classify: classify}
	if scope == scopeDependency || name == "" {
		b.instance = semconv.BreakerInstanceService
	}
	bld := circuitbreaker.NewBuilder[any]().
		WithDelay(cmpOr(cfg.Delay, DefaultBreakerDelay)).
		WithJitterFactor(DefaultBreakerJitterFactor).
		WithSuccessThreshold(max(cfg.Successes, 1)).
		OnStateChanged(b.transition)
	switch {
	case cfg.FailureRate > 0:
		bld = bld.WithFailureRateThreshold(cfg.FailureRate, max(cfg.MinCalls, 1), cmpOr(cfg.Period, 10*time.Second))
	case cfg.Window > cfg.Failures:
		bld = bld.WithFailureThresholdRatio(cfg.Failures, cfg.Window)
	default:
		bld = bld.WithFailureThreshold(cfg.Failures)
	}
	b.cb = bld.Build()
	tel.addBreaker(b, b.instance)
	return b
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// transition runs on every state change, outside failsafe-go's lock, in the goroutine whose call
// into cb caused it, which holds b.mu.
func (b *Breaker) transition(ev circuitbreaker.StateChangedEvent) {
	// Store the current state, not ev.NewState: listeners of concurrent transitions may run out of order.
	b.state.Store(int32(b.cb.State()))
	if ev.NewState == circuitbreaker.OpenState {
		b.openedAt.Store(time.Now().Add(b.cb.RemainingDelay()).UnixNano())
	}
	if b.rearming {
		return
	}
	b.tel.breakerTransition(ev.OldState, ev.NewState)
	if b.ncaused < len(b.caused) {
		b.caused[b.ncaused] = transition{ev.OldState, ev.NewState}
		b.ncaused++
	}
}

// takeLocked returns and clears the transitions the current call caused.
func (b *Breaker) takeLocked() ([2]transition, int) {
	c, n := b.caused, b.ncaused
	b.ncaused = 0
	return c, n
}

// Allow asks for a permit. It returns nil, or a *RejectedError matching ErrBreakerOpen. Every nil
// return must be followed by exactly one Record. AllowContext also reports a state change the request
// caused on its span.
func (b *Breaker) Allow() error { return b.AllowContext(context.Background()) }

// AllowContext is Allow for the request whose context is ctx: the change from open to half-open that
// the permit may cause is added to ctx's recording span as a chassis.breaker.transition event.
func (b *Breaker) AllowContext(ctx context.Context) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	ok := b.cb.TryAcquirePermit()
	caused, n := b.takeLocked()
	b.mu.Unlock()
	transitionEvents(ctx, b.instance, caused[:n])
	if ok {
		return nil
	}
	return &RejectedError{Reason: ReasonBreakerOpen, Instance: b.name, RetryIn: b.cb.RemainingDelay(), err: ErrBreakerOpen}
}

// Record reports the outcome of a permitted call.
func (b *Breaker) Record(o Outcome) { b.RecordContext(context.Background(), o) }

// RecordContext is Record for the request whose context is ctx: a state change the outcome causes
// (closed -> open, half_open -> open or closed) is added to ctx's recording span as a
// chassis.breaker.transition event, so the trace shows which call opened or closed the breaker.
func (b *Breaker) RecordContext(ctx context.Context, o Outcome) {
	if b == nil {
		return
	}
	b.mu.Lock()
	switch o {
	case Success:
		b.cb.RecordSuccess()
	case Failure:
		b.cb.RecordFailure()
	default:
		b.releaseLocked()
	}
	caused, n := b.takeLocked()
	b.mu.Unlock()
	transitionEvents(ctx, b.instance, caused[:n])
}

// releaseLocked returns a half-open permit without recording a result. failsafe-go has no such call
// (a permit is released only by recording), and a half-open breaker whose probes were all cancelled
// would stay half-open and reject forever (go-zero #4101 describes the symptom). Re-entering
// half-open restores the permits; the transitions it causes are not reported. Closed breakers hold
// no permits, so nothing is needed there.
func (b *Breaker) releaseLocked() {
	if State(b.state.Load()) != circuitbreaker.HalfOpenState || !b.cb.IsHalfOpen() {
		return
	}
	b.rearming = true
	b.cb.Open()
	b.cb.HalfOpen()
	b.rearming = false
}

// openNow opens the breaker at once, on behalf of the request whose context is ctx.
func (b *Breaker) openNow(ctx context.Context) {
	if State(b.state.Load()) == circuitbreaker.OpenState {
		return
	}
	b.mu.Lock()
	b.cb.Open()
	caused, n := b.takeLocked()
	b.mu.Unlock()
	transitionEvents(ctx, b.instance, caused[:n])
}

// State returns the breaker's state; a nil breaker is always closed.
func (b *Breaker) State() State {
	if b == nil {
		return circuitbreaker.ClosedState
	}
	return State(b.state.Load())
}

// Available reports, without locking, whether a call would be let through now: the breaker is
// closed or half-open, or open with its delay elapsed (the next call becomes the probe). Balancers use
// it to skip instances whose breaker is open.
func (b *Breaker) Available() bool {
	if b == nil {
		return true
	}
	if State(b.state.Load()) != circuitbreaker.OpenState {
		return true
	}
	return time.Now().UnixNano() >= b.openedAt.Load()
}

// Wrap is the breaker as a Middleware. The returned RoundTripper is a discovery.InstanceTransport,
// so a balancer skips it while the breaker is open.
func (b *Breaker) Wrap(next http.RoundTripper) http.RoundTripper {
	if b == nil {
		return next
	}
	return &breakerTransport{b: b, next: next}
}

var _ discovery.InstanceTransport = (*breakerTransport)(nil)

type breakerTransport struct {
	b    *Breaker
	next http.RoundTripper
}

func (t *breakerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if err := t.b.AllowContext(ctx); err != nil {
		t.b.tel.reject(ctx, ReasonBreakerOpen, t.b.name)
		return nil, err
	}
	resp, err := t.next.RoundTrip(req)
	o := outcome(ctx, t.b.classify(resp, err), err)
	t.b.RecordContext(ctx, o)
	if o == Failure && errors.Is(err, syscall.ECONNREFUSED) {
		// Nothing listens at the instance's address (a killed process): every call will fail the
		// same way until it is restarted, so open now instead of after BREAKER_FAILURES more picks.
		// With P2C steering away after the first failure, those picks would trickle in over seconds.
		// The half-open probe after the delay finds the instance when it is back.
		t.b.openNow(ctx)
	}
	return resp, err
}

// Available reports whether the breaker would let a call through now.
func (t *breakerTransport) Available() bool { return t.b.Available() }
