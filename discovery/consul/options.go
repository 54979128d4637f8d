package consul

import (
	"log/slog"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/internal/obs"
)

// Defaults for Registry, Registrar and Watch options.
const (
	// DefaultWaitTime is how long one blocking query may wait for a change. Consul's own default is 5
	// minutes; a shorter wait bounds how long a silently dead connection (no RST) goes unnoticed.
	DefaultWaitTime = time.Minute
	// DefaultMinInterval is the average minimum time between two successful queries of one watch (a
	// token bucket with a burst of 3). It stops an index that keeps changing (or a broken server that
	// answers at once) from turning the watch into a tight loop, while a change Consul commits in a few
	// raft writes still arrives without delay.
	DefaultMinInterval = 50 * time.Millisecond
	// DefaultBackoffBase and DefaultBackoffMax bound the full-jitter backoff after failed queries and
	// failed re-registrations.
	DefaultBackoffBase = 250 * time.Millisecond
	DefaultBackoffMax  = 10 * time.Second
	// DefaultResyncInterval is how often a Registrar checks that the agent still knows its service.
	DefaultResyncInterval = 10 * time.Second
	// DefaultCheckInterval and DefaultCheckTimeout configure the agent's HTTP check.
	DefaultCheckInterval = 5 * time.Second
	DefaultCheckTimeout  = 2 * time.Second
	// DefaultDeregisterCriticalAfter is how long the agent keeps a service whose check is critical
	// (a crashed process never deregisters). Consul does not accept less than one minute.
	DefaultDeregisterCriticalAfter = time.Minute
	// DefaultResetGrace is how long a watch keeps its last non-empty list when the agent answers with
	// no instances right after a reset (a failed query, or an index that went backwards): an agent that
	// restarted without its state has forgotten every service registered on it until their Registrars
	// register them again, which takes up to one DefaultResyncInterval. Twice that leaves room for
	// the retry backoff of the re-registration and the blocking query that brings it.
	DefaultResetGrace = 2 * DefaultResyncInterval
)

// Option configures a Registry or a Registrar. Options that do not concern the value being built are
// ignored (each option's doc says where it applies).
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	obs.Sinks
	backoff     backoff.Policy
	minInterval time.Duration
	resync      time.Duration
}

func newOptions(opts []Option) options {
	o := options{
		Sinks:       obs.Defaults(),
		backoff:     backoff.Policy{Base: DefaultBackoffBase, Max: DefaultBackoffMax},
		minInterval: DefaultMinInterval,
		resync:      DefaultResyncInterval,
	}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	return o
}

// WithMeterProvider sets where metrics go (Registry and Registrar). The default is a no-op provider:
// nothing is recorded unless a provider is passed.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.SetMeterProvider(mp) })
}

// WithLogger sets the logger for background events that have no caller to return an error to: failed
// queries, lost registrations, failed heartbeats (Registry and Registrar). The default discards.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.SetLogger(l) })
}

// WithBackoff sets the full-jitter exponential backoff after errors: the n-th consecutive failure waits
// a uniform random time below min(max, base·2^(n-1)). Defaults DefaultBackoffBase, DefaultBackoffMax
// (Registry and Registrar).
func WithBackoff(base, maxDelay time.Duration) Option {
	return optionFunc(func(o *options) { o.backoff = backoff.Policy{Base: base, Max: maxDelay} })
}

// WithMinInterval sets the average minimum time between successful queries of one watch, after a
// burst of 3 (Registry only); default DefaultMinInterval. Zero or less keeps the default: a watch always rate limits itself.
func WithMinInterval(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.minInterval = d
		}
	})
}

// WithResyncInterval sets how often a Registrar checks that the agent still has its service and
// registers it again if not (Registrar only); default DefaultResyncInterval.
func WithResyncInterval(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.resync = d
		}
	})
}

// Consistency is the read mode of a watch's queries: Consul's CAP trade-off.
type Consistency int

const (
	// Stale lets any server (or the agent cache) answer; reads keep working without a leader, during
	// elections and partitions, and are typically within ~50 ms of the leader. The default.
	Stale Consistency = iota
	// Leader is Consul's "default" mode: the leader answers, so reads fail while there is no leader,
	// and may be stale for a moment after a leader loses its quorum without knowing it.
	Leader
	// Consistent makes the leader confirm its leadership with a quorum before answering: never stale,
	// slowest, and unavailable without a quorum.
	Consistent
	// Cached answers from the local agent's cache (background-refreshed blocking queries), which
	// serves the last result while the servers are unreachable. Fewest server requests.
	Cached
)

func (c Consistency) String() string {
	switch c {
	case Stale:
		return "stale"
	case Leader:
		return "leader"
	case Consistent:
		return "consistent"
	case Cached:
		return "cached"
	}
	return "unknown"
}

// WatchOption configures one Registry.Watch. Watches with the same service and the same options share
// one blocking query.
type WatchOption interface{ applyWatch(*watchConfig) }

type watchOptionFunc func(*watchConfig)

func (f watchOptionFunc) applyWatch(c *watchConfig) { f(c) }

type watchConfig struct {
	tags        []string
	filter      string
	datacenter  string
	consistency Consistency
	wait        time.Duration
	maxStale    time.Duration
	resetGrace  time.Duration
}

// WithTags keeps only instances that have every tag.
func WithTags(tags ...string) WatchOption {
	return watchOptionFunc(func(c *watchConfig) { c.tags = append(c.tags, tags...) })
}

// WithFilter adds a Consul filter expression (for example `Service.Meta.version == "2"`); several are
// joined with "and". See MetaFilter for the common case.
func WithFilter(expr string) WatchOption {
	return watchOptionFunc(func(c *watchConfig) {
		if expr == "" {
			return
		}
		if c.filter != "" {
			c.filter = "(" + c.filter + ") and (" + expr + ")"
			return
		}
		c.filter = expr
	})
}

// WithDatacenter queries another datacenter; default the agent's own.
func WithDatacenter(dc string) WatchOption {
	return watchOptionFunc(func(c *watchConfig) { c.datacenter = dc })
}

// WithConsistency sets the read mode; default Stale.
func WithConsistency(mode Consistency) WatchOption {
	return watchOptionFunc(func(c *watchConfig) { c.consistency = mode })
}

// WithWaitTime sets how long one blocking query may wait; default DefaultWaitTime, at most Consul's
// limit of 10 minutes.
func WithWaitTime(d time.Duration) WatchOption {
	return watchOptionFunc(func(c *watchConfig) {
		if d > 0 {
			c.wait = min(d, 10*time.Minute)
		}
	})
}

// WithMaxStaleness drops the last known list once Consul has been unreachable for d: the watch then
// reports no instances with an Err wrapping discovery.ErrStale, until a query succeeds again. Zero (the
// default) keeps serving the last known list for as long as the outage lasts, which is what you want
// when instances are long-lived; set it when an old list is worse than none (instances move often and
// addresses get reused).
func WithMaxStaleness(d time.Duration) WatchOption {
	return watchOptionFunc(func(c *watchConfig) {
		if d > 0 {
			c.maxStale = d
		}
	})
}

// WithResetGrace sets how long a watch keeps serving its last non-empty list, with an Err wrapping
// ErrUnconfirmedEmpty, when Consul answers with no instances right after a reset: the first answer
// after failed queries (the agent may have restarted without its state), or an answer whose index went
// backwards (a snapshot restore or a new raft log). While the grace runs, the watch keeps querying;
// any non-empty answer is published at once, and if the list is still empty when the grace ends it is
// published as a real, error-free empty list. Default DefaultResetGrace; zero or less turns the hold
// off, so an empty answer is published at once whatever preceded it. An empty answer that is not right
// after a reset (the last instance deregistered while the watch was connected) is never held.
func WithResetGrace(d time.Duration) WatchOption {
	return watchOptionFunc(func(c *watchConfig) { c.resetGrace = max(d, 0) })
}

// MetaFilter returns a filter expression matching instances whose service metadata key has value, for
// use with WithFilter. A key or value containing both a backquote and a double quote cannot be written
// in Consul's filter language; the expression then fails to parse and the watch reports the error.
func MetaFilter(key, value string) string {
	return "Service.Meta[" + filterString(key) + "] == " + filterString(value)
}

// filterString writes s as a literal of Consul's filter language (go-bexpr), which has raw `...` strings
// and "..." strings that cannot contain a double quote.
func filterString(s string) string {
	if !strings.Contains(s, "`") {
		return "`" + s + "`"
	}
	return strconv.Quote(s)
}
