package resilience

import (
	"errors"
	"fmt"
	"time"

	"github.com/cloudchassis/kit/resilience/policy"
)

// Defaults that Config has no field for.
const (
	defaultRetryAfterMax = 2 * time.Second  // RetryAfterMax 0
	defaultRetryMaxDelay = time.Second      // RetryMaxDelay 0
	defaultBodyBufferMax = 1 << 20          // BodyBufferMax 0
	defaultHedgeMinDelay = time.Millisecond // floor of a percentile hedge delay without HedgeDelay
)

// Config holds the resilience settings of one dependency. Its struct tags follow
// github.com/kelseyhightower/envconfig: chassis reads it with the prefix CLIENT_<NAME>, so
// CLIENT_PRICING_TIMEOUT sets Timeout of the dependency "pricing". The `default` tags are the
// defaults, which DefaultConfig returns; a zero Config is not useful. Durations of 0 disable the policy they
// belong to (no timeout, no hedge, ...), as documented per field.
type Config struct {
	Timeout        time.Duration `envconfig:"TIMEOUT" default:"10s" desc:"overall deadline of one call, retries and hedges included; 0 disables"`
	AttemptTimeout time.Duration `envconfig:"ATTEMPT_TIMEOUT" default:"2s" desc:"deadline of each attempt; 0 disables"`

	Retries        int           `envconfig:"RETRIES" default:"2" desc:"retries after the first attempt (idempotent or marked requests only); 0 disables"`
	RetryBaseDelay time.Duration `envconfig:"RETRY_BASE_DELAY" default:"25ms" desc:"base of the full-jitter exponential backoff"`
	RetryMaxDelay  time.Duration `envconfig:"RETRY_MAX_DELAY" default:"1s" desc:"cap of one backoff sleep"`
	RetryAfterMax  time.Duration `envconfig:"RETRY_AFTER_MAX" default:"2s" desc:"longest Retry-After honoured; a longer one ends the retries"`
	BodyBufferMax  int64         `envconfig:"RETRY_BODY_MAX" default:"1048576" desc:"request bodies up to this many bytes are buffered so retries and hedges can resend them"`
	RetryOn        string        `envconfig:"RETRY_ON" desc:"what a sent attempt is retried on, replacing the classifier's choice: status codes (503), classes (5xx, 4xx), connection, timeout, comma-separated, e.g. 502,503,504,429,connection,timeout; empty keeps the default table (docs/resilience.md); attempts never sent are always retried"`

	BudgetRatio        float64       `envconfig:"RETRY_BUDGET_RATIO" default:"0.2" desc:"retries and hedges allowed as a fraction of calls"`
	BudgetMinPerSecond float64       `envconfig:"RETRY_BUDGET_MIN_PER_SECOND" default:"10" desc:"retries and hedges always allowed per second (the floor)"`
	BudgetWindow       time.Duration `envconfig:"RETRY_BUDGET_WINDOW" default:"10s" desc:"sliding window the budget counts over"`

	HedgeDelay      time.Duration `envconfig:"HEDGE_DELAY" default:"0" desc:"send a hedge after this delay; with HEDGE_PERCENTILE, the lower bound of the delay; 0 and no percentile disables hedging"`
	HedgePercentile float64       `envconfig:"HEDGE_PERCENTILE" default:"0" desc:"hedge after this observed latency percentile (0-1, e.g. 0.95); 0 uses HEDGE_DELAY alone"`
	MaxHedges       int           `envconfig:"MAX_HEDGES" default:"1" desc:"extra concurrent attempts per call"`

	BreakerFailures    uint          `envconfig:"BREAKER_FAILURES" default:"5" desc:"per-instance breaker: failures that open it (consecutive unless BREAKER_WINDOW is set); 0 disables"`
	BreakerWindow      uint          `envconfig:"BREAKER_WINDOW" default:"0" desc:"per-instance breaker: open on BREAKER_FAILURES out of the last BREAKER_WINDOW calls"`
	BreakerFailureRate float64       `envconfig:"BREAKER_FAILURE_RATE" default:"0" desc:"per-instance breaker: time based instead, open when this failure rate (0-1) is reached over BREAKER_PERIOD"`
	BreakerMinCalls    uint          `envconfig:"BREAKER_MIN_CALLS" default:"10" desc:"per-instance time-based breaker: calls needed in BREAKER_PERIOD before it can open"`
	BreakerPeriod      time.Duration `envconfig:"BREAKER_PERIOD" default:"10s" desc:"per-instance time-based breaker: sliding window"`
	BreakerDelay       time.Duration `envconfig:"BREAKER_DELAY" default:"5s" desc:"how long a breaker stays open before a half-open probe (jittered by 20%)"`
	BreakerSuccesses   uint          `envconfig:"BREAKER_SUCCESSES" default:"1" desc:"half-open probes that must succeed to close the breaker"`

	DependencyBreakerRate     float64       `envconfig:"DEPENDENCY_BREAKER_RATE" default:"0.5" desc:"dependency breaker: open when this share of calls (after retries) fails over DEPENDENCY_BREAKER_PERIOD; 0 disables"`
	DependencyBreakerMinCalls uint          `envconfig:"DEPENDENCY_BREAKER_MIN_CALLS" default:"20" desc:"dependency breaker: calls needed in the period before it can open"`
	DependencyBreakerPeriod   time.Duration `envconfig:"DEPENDENCY_BREAKER_PERIOD" default:"10s" desc:"dependency breaker: sliding window"`

	MaxConcurrent     int           `envconfig:"MAX_CONCURRENT" default:"0" desc:"bulkhead: concurrent attempts to the dependency; 0 disables"`
	MaxConcurrentWait time.Duration `envconfig:"MAX_CONCURRENT_WAIT" default:"0" desc:"bulkhead: how long an attempt may wait for a slot"`

	PropagateDeadline bool          `envconfig:"PROPAGATE_DEADLINE" default:"true" desc:"send the remaining deadline in the Chassis-Timeout-Ms header"`
	DeadlineMargin    time.Duration `envconfig:"DEADLINE_MARGIN" default:"5ms" desc:"subtracted from the propagated deadline for the network and the reply"`
	MinAttemptTime    time.Duration `envconfig:"MIN_ATTEMPT_TIME" default:"5ms" desc:"an attempt with less time left on the caller's deadline is refused locally (deadline_too_short), not sent; 0 disables"`
}

// DefaultConfig returns the defaults the `default` tags of Config describe.
func DefaultConfig() Config {
	return Config{
		Timeout:                   10 * time.Second,
		AttemptTimeout:            2 * time.Second,
		Retries:                   2,
		RetryBaseDelay:            25 * time.Millisecond,
		RetryMaxDelay:             defaultRetryMaxDelay,
		RetryAfterMax:             defaultRetryAfterMax,
		BodyBufferMax:             defaultBodyBufferMax,
		BudgetRatio:               0.2,
		BudgetMinPerSecond:        10,
		BudgetWindow:              10 * time.Second,
		MaxHedges:                 1,
		BreakerFailures:           5,
		BreakerMinCalls:           10,
		BreakerPeriod:             10 * time.Second,
		BreakerDelay:              5 * time.Second,
		BreakerSuccesses:          1,
		DependencyBreakerRate:     0.5,
		DependencyBreakerMinCalls: 20,
		DependencyBreakerPeriod:   10 * time.Second,
		PropagateDeadline:         true,
		DeadlineMargin:            5 * time.Millisecond,
		MinAttemptTime:            5 * time.Millisecond,
	}
}

// Validate reports every invalid field at once.
func (c Config) Validate() error {
	var errs []error
	neg := func(name string, d time.Duration) {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s=%s: must not be negative", name, d))
		}
	}
	neg("TIMEOUT", c.Timeout)
	neg("ATTEMPT_TIMEOUT", c.AttemptTimeout)
	neg("RETRY_BASE_DELAY", c.RetryBaseDelay)
	neg("RETRY_MAX_DELAY", c.RetryMaxDelay)
	neg("RETRY_AFTER_MAX", c.RetryAfterMax)
	neg("HEDGE_DELAY", c.HedgeDelay)
	neg("BREAKER_DELAY", c.BreakerDelay)
	neg("MAX_CONCURRENT_WAIT", c.MaxConcurrentWait)
	neg("DEADLINE_MARGIN", c.DeadlineMargin)
	neg("MIN_ATTEMPT_TIME", c.MinAttemptTime)
	if _, err := parseRetryOn(c.RetryOn); err != nil {
		errs = append(errs, err)
	}
	if c.Retries < 0 {
		errs = append(errs, fmt.Errorf("RETRIES=%d: must be 0 or more", c.Retries))
	}
	if c.BodyBufferMax < 0 {
		errs = append(errs, fmt.Errorf("RETRY_BODY_MAX=%d: must be 0 or more", c.BodyBufferMax))
	}
	if c.BudgetRatio < 0 || c.BudgetMinPerSecond < 0 {
		errs = append(errs, fmt.Errorf("RETRY_BUDGET_RATIO=%g, RETRY_BUDGET_MIN_PER_SECOND=%g: must not be negative", c.BudgetRatio, c.BudgetMinPerSecond))
	}
	if (c.Retries > 0 || c.hedging()) && c.BudgetWindow <= 0 {
		errs = append(errs, fmt.Errorf("RETRY_BUDGET_WINDOW=%s: must be positive when retries or hedges are on", c.BudgetWindow))
	}
	if c.HedgePercentile < 0 || c.HedgePercentile >= 1 {
		errs = append(errs, fmt.Errorf("HEDGE_PERCENTILE=%g: must be in [0, 1), e.g. 0.95", c.HedgePercentile))
	}
	if c.hedging() && c.MaxHedges < 1 {
		errs = append(errs, fmt.Errorf("MAX_HEDGES=%d: must be at least 1 when hedging is on", c.MaxHedges))
	}
	if c.BreakerFailureRate < 0 || c.BreakerFailureRate > 1 {
		errs = append(errs, fmt.Errorf("BREAKER_FAILURE_RATE=%g: must be in [0, 1]", c.BreakerFailureRate))
	}
	if c.BreakerFailureRate > 0 && (c.BreakerPeriod <= 0 || c.BreakerMinCalls == 0) {
		errs = append(errs, fmt.Errorf("BREAKER_PERIOD=%s, BREAKER_MIN_CALLS=%d: must be positive for a time-based breaker", c.BreakerPeriod, c.BreakerMinCalls))
	}
	if c.BreakerWindow != 0 && c.BreakerWindow < c.BreakerFailures {
		errs = append(errs, fmt.Errorf("BREAKER_WINDOW=%d: must be at least BREAKER_FAILURES=%d", c.BreakerWindow, c.BreakerFailures))
	}
	if c.DependencyBreakerRate < 0 || c.DependencyBreakerRate > 1 {
		errs = append(errs, fmt.Errorf("DEPENDENCY_BREAKER_RATE=%g: must be in [0, 1]", c.DependencyBreakerRate))
	}
	if c.DependencyBreakerRate > 0 && (c.DependencyBreakerPeriod <= 0 || c.DependencyBreakerMinCalls == 0) {
		errs = append(errs, fmt.Errorf("DEPENDENCY_BREAKER_PERIOD=%s, DEPENDENCY_BREAKER_MIN_CALLS=%d: must be positive when the dependency breaker is on", c.DependencyBreakerPeriod, c.DependencyBreakerMinCalls))
	}
	if c.MaxConcurrent < 0 {
		errs = append(errs, fmt.Errorf("MAX_CONCURRENT=%d: must be 0 (off) or more", c.MaxConcurrent))
	}
	return errors.Join(errs...)
}

func (c Config) hedging() bool { return c.HedgeDelay > 0 || c.HedgePercentile > 0 }

// instanceBreaker returns the per-instance breaker settings of c.
func (c Config) instanceBreaker() policy.BreakerConfig {
	return policy.BreakerConfig{
		Failures: c.BreakerFailures, Window: c.BreakerWindow,
		FailureRate: c.BreakerFailureRate, MinCalls: c.BreakerMinCalls, Period: c.BreakerPeriod,
		Delay: c.BreakerDelay, Successes: c.BreakerSuccesses,
	}
}

// dependencyBreaker returns the dependency-wide breaker settings of c (time based).
func (c Config) dependencyBreaker() policy.BreakerConfig {
	if c.DependencyBreakerRate == 0 {
		return policy.BreakerConfig{}
	}
	return policy.BreakerConfig{
		FailureRate: c.DependencyBreakerRate, MinCalls: c.DependencyBreakerMinCalls,
		Period: c.DependencyBreakerPeriod, Delay: c.BreakerDelay, Successes: c.BreakerSuccesses,
	}
}

// retryConfig returns the retry settings of c.
func (c Config) retryConfig() retryConfig {
	return retryConfig{
		MaxAttempts: c.Retries + 1, BaseDelay: c.RetryBaseDelay, MaxDelay: c.RetryMaxDelay,
		RetryAfterMax: c.RetryAfterMax, BodyBufferMax: c.BodyBufferMax,
	}
}

// hedgeConfig returns the hedging settings of c.
func (c Config) hedgeConfig() hedgeConfig {
	return hedgeConfig{Delay: c.HedgeDelay, Percentile: c.HedgePercentile, MaxHedges: c.MaxHedges}
}
