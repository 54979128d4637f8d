package etcdsync

import (
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/coordination/lock"
	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/internal/obs"
)

// Defaults of a Lock's options.
const (
	// DefaultTTL is the lease TTL. It bounds how long a crashed holder keeps the lock. etcd counts
	// it in whole seconds and raises it to its own minimum (1.5 election timeouts).
	DefaultTTL = 10 * time.Second
	// MinTTL is the shortest TTL New accepts.
	MinTTL = 2 * time.Second
	// DefaultMargin is how long before the lease can expire at the server the holder considers the
	// lock lost: it stops at (send time of the last successful keep-alive + TTL - margin) by its own
	// clock. It covers the holder's clock running slower than the leader's (drift is parts per
	// million, so a few ms per TTL) and, mostly, the time the holder's code needs to notice Lost and
	// stop writing.
	DefaultMargin = time.Second
	// DefaultWaitTime bounds one watch of a Source or KV without a change, as Consul's wait time
	// bounds a blocking query, so a silently dead stream is noticed.
	DefaultWaitTime = time.Minute
)

// Option configures a Lock.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	ttl     time.Duration
	margin  time.Duration
	value   []byte
	backoff backoff.Policy
	obs.Sinks
}

func newOptions(opts []Option) options {
	o := options{
		ttl:     DefaultTTL,
		margin:  DefaultMargin,
		backoff: backoff.Policy{Base: lock.DefaultBackoffBase, Max: lock.DefaultBackoffMax},
		Sinks:   obs.Defaults(),
	}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	return o
}

// WithTTL sets the lease TTL (default DefaultTTL), a whole number of seconds of at least MinTTL.
// The Lock sends a keep-alive every TTL/3.
func WithTTL(d time.Duration) Option { return optionFunc(func(o *options) { o.ttl = d }) }

// WithMargin sets the safety margin before the lease's expiry at which the holder gives the lock up
// (default DefaultMargin). New requires 0 < margin <= TTL/3, so that two keep-alives can fail
// before the holder gives up.
func WithMargin(d time.Duration) Option { return optionFunc(func(o *options) { o.margin = d }) }

// WithValue sets the value of the holder's key, for example its instance ID (default empty). An
// election's Source reads the leader's identity there.
func WithValue(v []byte) Option {
	return optionFunc(func(o *options) { o.value = append([]byte(nil), v...) })
}

// WithBackoff sets the backoff after failed calls (default lock.DefaultBackoffBase to
// lock.DefaultBackoffMax, full jitter).
func WithBackoff(base, maxDelay time.Duration) Option {
	return optionFunc(func(o *options) { o.backoff = backoff.Policy{Base: base, Max: maxDelay} })
}

// WithLogger sets the logger for losses and retried errors (default: discard).
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.SetLogger(l) })
}

// WithMeterProvider sets where metrics go (the names are coordination/lock's). The default is a
// no-op provider: the package never reads the OpenTelemetry globals.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.SetMeterProvider(mp) })
}
