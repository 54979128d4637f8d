package policy

import (
	"cmp"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
)

// BreakerConfig configures a circuit breaker. Exactly one way of opening applies:
//   - FailureRate > 0: time based, opens when the failure rate over the sliding Period (default
//     10s) reaches FailureRate and at least MinCalls calls were recorded in it;
//   - else Window > Failures: opens on Failures failures among the last Window calls (ratio);
//   - else Failures > 0: opens on Failures consecutive failures (count).
//
// Neither Failures nor FailureRate set disables the breaker. An open breaker lets a probe through
// after Delay (default 5s, jittered by ±20% so breakers that opened together do not probe together);
// Successes (at least 1) successful probes close it, a failed probe opens it again.
type BreakerConfig struct {
	Failures    uint
	Window      uint
	FailureRate float64
	MinCalls    uint
	Period      time.Duration
	Delay       time.Duration
	Successes   uint
	// OnTransition, if set, is called with every state change a call caused, after the call, with
	// the call's context (context.Background for Allow and Record without one).
	OnTransition func(ctx context.Context, from, to State)
}

func (c BreakerConfig) enabled() bool { return c.Failures > 0 || c.FailureRate > 0 }

// State of a breaker.
type State int32

// Breaker states.
const (
	Closed State = iota
	Open
	HalfOpen
)

func (s State) String() string {
	switch s {
	case Open:
		return "open"
	case HalfOpen:
		return "half_open"
	}
	return "closed"
}

func stateOf(s circuitbreaker.State) State {
	switch s {
	case circuitbreaker.OpenState:
		return Open
	case circuitbreaker.HalfOpenState:
		return HalfOpen
	}
	return Closed
}

// Outcome classifies a finished call for a breaker.
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

// Breaker is a circuit breaker on failsafe-go's state machine, used through its permit API
// (TryAcquirePermit / RecordSuccess / RecordFailure): the executor allocates on every call, the
// permit API does not.
type Breaker struct {
	cb       circuitbreaker.CircuitBreaker[any]
	on       func(ctx context.Context, from, to State)
	state    atomic.Int32 // mirror of cb's state, read lock-free by Available and State
	openedAt atomic.Int64 // unix ns at which the open breaker lets a probe through

	// mu serializes the calls into cb that can change its state. failsafe-go runs the state listener
	// synchronously, in the goroutine whose call changed the state, so the transitions recorded in
	// caused while a goroutine holds mu are its call's own.
	mu       sync.Mutex
	caused   [2]transition // guarded by mu; a call causes at most two (open -> half_open -> open)
	ncaused  int
	rearming bool // guarded by mu: transitions of release are not reported
}

type transition struct{ from, to State }

// NewBreaker returns a breaker for cfg, or nil when cfg disables it.
func NewBreaker(cfg BreakerConfig) *Breaker {
	if !cfg.enabled() {
		return nil
	}
	b := &Breaker{on: cfg.OnTransition}
	bld := circuitbreaker.NewBuilder[any]().
		WithDelay(cmp.Or(cfg.Delay, 5*time.Second)).
		WithJitterFactor(0.2).
		WithSuccessThreshold(max(cfg.Successes, 1)).
		OnStateChanged(b.transition)
	switch {
	case cfg.FailureRate > 0:
		bld = bld.WithFailureRateThreshold(cfg.FailureRate, max(cfg.MinCalls, 1), cmp.Or(cfg.Period, 10*time.Second))
	case cfg.Window > cfg.Failures:
		bld = bld.WithFailureThresholdRatio(cfg.Failures, cfg.Window)
	default:
		bld = bld.WithFailureThreshold(cfg.Failures)
	}
	b.cb = bld.Build()
	return b
}

// transition runs on every state change, in the goroutine whose call into cb caused it, which holds b.mu.
func (b *Breaker) transition(ev circuitbreaker.StateChangedEvent) {
	// Store the current state, not ev.NewState: listeners of concurrent transitions may run out of order.
	b.state.Store(int32(stateOf(b.cb.State())))
	if ev.NewState == circuitbreaker.OpenState {
		b.openedAt.Store(time.Now().Add(b.cb.RemainingDelay()).UnixNano())
	}
	if b.rearming {
		return
	}
	if b.ncaused < len(b.caused) {
		b.caused[b.ncaused] = transition{stateOf(ev.OldState), stateOf(ev.NewState)}
		b.ncaused++
	}
}

// unlock releases b.mu and reports the transitions the call caused.
func (b *Breaker) unlock(ctx context.Context) {
	c, n := b.caused, b.ncaused
	b.ncaused = 0
	b.mu.Unlock()
	if b.on != nil {
		for _, t := range c[:n] {
			b.on(ctx, t.from, t.to)
		}
	}
}

// Allow asks for a permit for the call whose context is ctx, and reports whether it got one. Every
// true must be followed by exactly one Record.
func (b *Breaker) Allow(ctx context.Context) bool {
	if b == nil {
		return true
	}
	b.mu.Lock()
	ok := b.cb.TryAcquirePermit()
	b.unlock(ctx)
	return ok
}

// RetryIn returns how long an open breaker stays open, 0 otherwise.
func (b *Breaker) RetryIn() time.Duration {
	if b == nil {
		return 0
	}
	return b.cb.RemainingDelay()
}

// Record reports the outcome of a permitted call.
func (b *Breaker) Record(ctx context.Context, o Outcome) {
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
	b.unlock(ctx)
}

// releaseLocked returns a half-open permit without recording a result. failsafe-go has no such call
// (a permit is released only by recording), and a half-open breaker whose probes were all cancelled
// would stay half-open and reject forever (go-zero #4101 describes the symptom). Re-entering
// half-open restores the permits; the transitions it causes are not reported. Closed breakers hold
// no permits, so nothing is needed there.
func (b *Breaker) releaseLocked() {
	if State(b.state.Load()) != HalfOpen || !b.cb.IsHalfOpen() {
		return
	}
	b.rearming = true
	b.cb.Open()
	b.cb.HalfOpen()
	b.rearming = false
}

// Trip opens the breaker at once, on behalf of the call whose context is ctx.
func (b *Breaker) Trip(ctx context.Context) {
	if b == nil || State(b.state.Load()) == Open {
		return
	}
	b.mu.Lock()
	b.cb.Open()
	b.unlock(ctx)
}

// State returns the breaker's state without locking; a nil breaker is always closed.
func (b *Breaker) State() State {
	if b == nil {
		return Closed
	}
	return State(b.state.Load())
}

// Available reports, without locking, whether a call would be let through now: the breaker is
// closed or half-open, or open with its delay elapsed (the next call becomes the probe).
func (b *Breaker) Available() bool {
	if b == nil || State(b.state.Load()) != Open {
		return true
	}
	return time.Now().UnixNano() >= b.openedAt.Load()
}
