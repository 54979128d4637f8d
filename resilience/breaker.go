package resilience

import (
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"

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
// rather than failsafe.Get: the executor costs ~1.0 µs and 14 allocations per call on the reference
// VM (PEERS.md), the permit API ~45 ns and none (BenchmarkBreaker in this package).
//
// A Breaker is safe for concurrent use.
type Breaker struct {
	cb       circuitbreaker.CircuitBreaker[any]
	name     string
	tel      *instruments
	state    atomic.Int32 // mirror of cb's state, read lock-free by Available and the state gauge
	openedAt atomic.Int64 // unix ns at which the open breaker lets a probe through
	rearmMu  sync.Mutex
	rearming atomic.Bool
}

// NewBreaker returns a breaker for cfg, or nil when cfg disables it (a nil *Breaker allows everything).
// name identifies it in errors and telemetry (chassis.breaker.instance; "" for a dependency-wide
// breaker, reported as "service"). The breaker appears on the state gauge until it is garbage
// collected.
func NewBreaker(cfg BreakerConfig, name string, opts ...Option) *Breaker {
	if !cfg.enabled() {
		return nil
	}
	o := newOptions(opts)
	return newBreaker(cfg, name, scopeInstance, o.instruments())
}

const (
	scopeInstance   = "instance"
	scopeDependency = "dependency"
)

func newBreaker(cfg BreakerConfig, name, scope string, tel *instruments) *Breaker {
	if !cfg.enabled() {
		return nil
	}
	b := &Breaker{name: name, tel: tel}
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
	instance := name
	if scope == scopeDependency || name == "" {
		instance = semconv.BreakerInstanceService
	}
	tel.addBreaker(b, instance)
	return b
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// transition runs on every state change, outside failsafe-go's lock.
func (b *Breaker) transition(ev circuitbreaker.StateChangedEvent) {
	// Store the current state, not ev.NewState: listeners of concurrent transitions may run out of order.
	b.state.Store(int32(b.cb.State()))
	if ev.NewState == circuitbreaker.OpenState {
		b.openedAt.Store(time.Now().Add(b.cb.RemainingDelay()).UnixNano())
	}
	if !b.rearming.Load() {
		b.tel.breakerTransition(ev.OldState, ev.NewState)
	}
}

// Allow asks for a permit. It returns nil, or a *RejectedError matching ErrBreakerOpen. Every nil
// return must be followed by exactly one Record.
func (b *Breaker) Allow() error {
	if b == nil || b.cb.TryAcquirePermit() {
		return nil
	}
	return &RejectedError{Reason: ReasonBreakerOpen, Instance: b.name, RetryIn: b.cb.RemainingDelay(), err: ErrBreakerOpen}
}

// Record reports the outcome of a permitted call.
func (b *Breaker) Record(o Outcome) {
	if b == nil {
		return
	}
	switch o {
	case Success:
		b.cb.RecordSuccess()
	case Failure:
		b.cb.RecordFailure()
	default:
		b.release()
	}
}

// release returns a half-open permit without recording a result. failsafe-go has no such call (a
// permit is released only by recording), and a half-open breaker whose probes were all cancelled
// would stay half-open and reject forever (go-zero #4101 describes the symptom). Re-entering
// half-open restores the permits; the transitions it causes are not reported. Closed breakers hold
// no permits, so nothing is needed there.
func (b *Breaker) release() {
	if State(b.state.Load()) != circuitbreaker.HalfOpenState {
		return
	}
	b.rearmMu.Lock()
	defer b.rearmMu.Unlock()
	if !b.cb.IsHalfOpen() {
		return
	}
	b.rearming.Store(true)
	b.cb.Open()
	b.cb.HalfOpen()
	b.rearming.Store(false)
}

func (b *Breaker) openNow() {
	if State(b.state.Load()) != circuitbreaker.OpenState {
		b.cb.Open()
	}
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

// Wrap is the breaker as a Middleware. The returned RoundTripper also has an Available method, so a
// balancer that checks for `interface{ Available() bool }` skips it while the breaker is open.
func (b *Breaker) Wrap(next http.RoundTripper) http.RoundTripper {
	if b == nil {
		return next
	}
	return &breakerTransport{b: b, next: next}
}

type breakerTransport struct {
	b    *Breaker
	next http.RoundTripper
}

func (t *breakerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.b.Allow(); err != nil {
		t.b.tel.reject(req.Context(), ReasonBreakerOpen, t.b.name)
		return nil, err
	}
	resp, err := t.next.RoundTrip(req)
	o := classify(req.Context(), resp, err)
	t.b.Record(o)
	if o == Failure && errors.Is(err, syscall.ECONNREFUSED) {
		// Nothing listens at the instance's address (a killed process): every call will fail the
		// same way until it is restarted, so open now instead of after BREAKER_FAILURES more picks.
		// With P2C steering away after the first failure, those picks would trickle in over seconds.
		// The half-open probe after the delay finds the instance when it is back.
		t.b.openNow()
	}
	return resp, err
}

// Available reports whether the breaker would let a call through now.
func (t *breakerTransport) Available() bool { return t.b.Available() }
