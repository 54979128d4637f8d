package lock

import (
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/internal/obs"
)

// Defaults of a Lock's options.
const (
	// DefaultTTL is the session TTL. Consul accepts 10s to 24h. The TTL bounds how long a crashed
	// holder keeps the lock, and how long a holder cut off from Consul may still believe it holds it.
	DefaultTTL = 15 * time.Second
	// MinTTL and MaxTTL are Consul's bounds for a session TTL.
	MinTTL = 10 * time.Second
	MaxTTL = 24 * time.Hour
	// DefaultLockDelay is Consul's default lock-delay: after a holder's session is invalidated (not
	// after a clean Release), nobody can acquire the key for this long, so a holder that was cut off
	// has time to notice and stop before a new holder starts.
	DefaultLockDelay = 15 * time.Second
	// DefaultRetryWait is how long Acquire waits after Consul refused a key that nobody holds (it is
	// within lock-delay, or another contender won the race) before it tries again.
	DefaultRetryWait = 500 * time.Millisecond
	// DefaultWaitTime bounds one blocking query on the lock key. Shorter than Consul's 5 minutes so a
	// silently dead connection is noticed.
	DefaultWaitTime = time.Minute
	// DefaultMinInterval is the least time between two blocking queries that return an unchanged
	// index, so a server that answers at once cannot turn a watch into a tight loop.
	DefaultMinInterval = 50 * time.Millisecond
	// DefaultBackoffBase and DefaultBackoffMax bound the full-jitter backoff after failed calls.
	DefaultBackoffBase = 250 * time.Millisecond
	DefaultBackoffMax  = 5 * time.Second
	// DefaultCleanupTimeout bounds the release and session destruction that follow a cancelled
	// Acquire, whose own context is already done.
	DefaultCleanupTimeout = 5 * time.Second
)

// Behavior is what Consul does with a held key when the session is invalidated.
type Behavior string

// Behaviors.
const (
	// BehaviorRelease clears the key's holder and keeps its value (Consul's default).
	BehaviorRelease Behavior = "release"
	// BehaviorDelete deletes the key. Its LockIndex then restarts, which is one reason the fencing
	// token is the ModifyIndex, not the LockIndex.
	BehaviorDelete Behavior = "delete"
)

// Option configures a Lock.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	ttl         time.Duration
	lockDelay   time.Duration
	behavior    Behavior
	value       []byte
	name        string
	retryWait   time.Duration
	waitTime    time.Duration
	minInterval time.Duration
	backoff     backoff.Policy
	obs.Sinks
}

func newOptions(opts []Option) options {
	o := options{
		ttl:         DefaultTTL,
		lockDelay:   DefaultLockDelay,
		behavior:    BehaviorRelease,
		retryWait:   DefaultRetryWait,
		waitTime:    DefaultWaitTime,
		minInterval: DefaultMinInterval,
		backoff:     backoff.Policy{Base: DefaultBackoffBase, Max: DefaultBackoffMax},
		Sinks:       obs.Defaults(),
	}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	return o
}

// WithTTL sets the session TTL (default DefaultTTL). New rejects values outside [MinTTL, MaxTTL].
// The Lock renews the session every TTL/2 and considers the lock lost when no renewal has succeeded
// for a whole TTL.
func WithTTL(d time.Duration) Option { return optionFunc(func(o *options) { o.ttl = d }) }

// WithLockDelay sets the session's lock-delay (default DefaultLockDelay). Consul counts in
// milliseconds and treats 0 as its 15s default, so New rejects values below 1ms.
func WithLockDelay(d time.Duration) Option { return optionFunc(func(o *options) { o.lockDelay = d }) }

// WithBehavior sets what Consul does with the key when the session is invalidated (default
// BehaviorRelease).
func WithBehavior(b Behavior) Option { return optionFunc(func(o *options) { o.behavior = b }) }

// WithValue sets the value written to the key while held, for example the holder's instance ID
// (default empty). Election stores the leader's identity there.
func WithValue(v []byte) Option {
	return optionFunc(func(o *options) { o.value = append([]byte(nil), v...) })
}

// WithSessionName names the sessions in Consul's UI and API (default "lock <key>").
func WithSessionName(name string) Option { return optionFunc(func(o *options) { o.name = name }) }

// WithRetryWait sets the pause after Consul refused a free key (default DefaultRetryWait).
func WithRetryWait(d time.Duration) Option { return optionFunc(func(o *options) { o.retryWait = d }) }

// WithWaitTime bounds one blocking query (default DefaultWaitTime).
func WithWaitTime(d time.Duration) Option { return optionFunc(func(o *options) { o.waitTime = d }) }

// WithBackoff sets the backoff after failed calls (default DefaultBackoffBase to DefaultBackoffMax,
// full jitter).
func WithBackoff(base, maxDelay time.Duration) Option {
	return optionFunc(func(o *options) { o.backoff = backoff.Policy{Base: base, Max: maxDelay} })
}

// WithLogger sets the logger for losses and retried errors (default: discard).
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.SetLogger(l) })
}

// WithMeterProvider sets where metrics go. The default is a no-op provider: the package never reads
// the OpenTelemetry globals.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.SetMeterProvider(mp) })
}
