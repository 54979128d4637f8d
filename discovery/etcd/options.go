package etcd

import (
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/internal/obs"
)

// Defaults of the options and of Settings.
const (
	// DefaultPrefix is the root of every key this package writes and watches.
	DefaultPrefix = "/chassis"
	// DefaultLeaseTTL is the registration lease's time to live: how long a process that died without
	// deregistering (SIGKILL, a lost node) stays listed. A drained instance is gone at once (its lease
	// is revoked at the start of the drain), so the TTL only bounds the crash case. It is well above
	// etcd's minimum (1.5 election timeouts) and above a leader election, which extends every lease,
	// and the client renews it every TTL/3 (3.3 s): two renewals may be lost before it expires.
	DefaultLeaseTTL = 10 * time.Second
	// DefaultDialTimeout bounds connecting to an endpoint.
	DefaultDialTimeout = 5 * time.Second
	// DefaultRequestTimeout bounds one list (Get), grant, put or revoke. A linearizable read on a
	// member cut off from the quorum waits for a leader that does not come: the timeout turns it into
	// an error.
	DefaultRequestTimeout = 5 * time.Second
	// DefaultProgressInterval is how often a watch that has heard nothing asks etcd for a progress
	// notification. clientv3 reconnects a broken watch stream silently and forever; without an answer
	// within two intervals the watch reports the registry as failing (Snapshot.Err) and starts over.
	DefaultProgressInterval = 5 * time.Second
	// DefaultBackoffBase and DefaultBackoffMax bound the full-jitter backoff after failed lists and
	// failed re-registrations.
	DefaultBackoffBase = 250 * time.Millisecond
	DefaultBackoffMax  = 10 * time.Second
)

// Consistency is the read mode of a watch: etcd's CAP choice for discovery.
type Consistency int

const (
	// Linearizable (the default) lists through the leader's read index, so the list is never older
	// than the last committed write, and watches with clientv3.WithRequireLeader. A member cut off from
	// the quorum fails the list (after DefaultRequestTimeout) and etcd cancels its watches once it has
	// had no leader for about three election timeouts: the watcher keeps its last known list with Err
	// set and a growing age, and reconnects (clientv3 moves on to another endpoint). Consistent, not
	// available on the minority side (CP).
	Linearizable Consistency = iota
	// Serializable lists from whichever member the client reaches, and watches without requiring a
	// leader: a member cut off from the quorum keeps answering with its last state, so a watcher on the
	// minority side sees no error and no new events until the partition heals (and a process starting
	// there gets a possibly stale list instead of none). Available, not consistent (AP); cheaper for the
	// leader.
	Serializable
)

func (c Consistency) String() string {
	if c == Serializable {
		return "serializable"
	}
	return "linearizable"
}

// ParseConsistency parses "linearizable" or "serializable" (ETCD_CONSISTENCY).
func ParseConsistency(s string) (Consistency, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "linearizable":
		return Linearizable, true
	case "serializable":
		return Serializable, true
	}
	return Linearizable, false
}

// Option configures a Registry or a Registrar. Options that do not concern the value being built are
// ignored (each option's doc says where it applies).
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	obs.Sinks
	prefix      string
	backoff     backoff.Policy
	consistency Consistency
	maxStale    time.Duration
	progress    time.Duration
	timeout     time.Duration
}

func newOptions(opts []Option) options {
	o := options{
		Sinks:    obs.Defaults(),
		prefix:   DefaultPrefix,
		backoff:  backoff.Policy{Base: DefaultBackoffBase, Max: DefaultBackoffMax},
		progress: DefaultProgressInterval,
		timeout:  DefaultRequestTimeout,
	}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	return o
}

// WithPrefix sets the root of the keys (Registry and Registrar); default DefaultPrefix. Services
// sharing an etcd cluster find each other only under the same prefix.
func WithPrefix(p string) Option {
	return optionFunc(func(o *options) { o.prefix = strings.TrimRight(p, "/") })
}

// WithMeterProvider sets where metrics go (Registry and Registrar). The default is a no-op provider.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.SetMeterProvider(mp) })
}

// WithLogger sets the logger for background events that have no caller to return an error to: failed
// lists and watches, lost leases (Registry and Registrar). The default discards.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.SetLogger(l) })
}

// WithBackoff sets the full-jitter exponential backoff after errors: the n-th consecutive failure
// waits a uniform random time below min(max, base·2^(n-1)). Defaults DefaultBackoffBase,
// DefaultBackoffMax (Registry and Registrar).
func WithBackoff(base, maxDelay time.Duration) Option {
	return optionFunc(func(o *options) { o.backoff = backoff.Policy{Base: base, Max: maxDelay} })
}

// WithConsistency sets the read mode of watches (Registry only); default Linearizable.
func WithConsistency(c Consistency) Option {
	return optionFunc(func(o *options) { o.consistency = c })
}

// WithMaxStaleness drops the last known list once etcd has been unreachable for d: the watch then
// reports no instances with an Err wrapping discovery.ErrStale until it lists again (Registry only).
// Zero, the default, keeps the last known list for as long as the outage lasts.
func WithMaxStaleness(d time.Duration) Option {
	return optionFunc(func(o *options) { o.maxStale = max(d, 0) })
}

// WithProgressInterval sets how often an idle watch asks etcd for a progress notification (Registry
// only); default DefaultProgressInterval. A watch that hears nothing for two intervals is failing.
func WithProgressInterval(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.progress = d
		}
	})
}

// WithRequestTimeout bounds each list, lease grant, put and revoke (Registry and Registrar); default
// DefaultRequestTimeout.
func WithRequestTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	})
}
