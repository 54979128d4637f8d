package dns

import (
	"context"
	"log/slog"
	"net"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/internal/obs"
)

// Defaults of a Resolver.
const (
	// DefaultMinRefresh is the floor of the refresh interval. Consul's DNS interface answers with a TTL
	// of 0 unless dns_config.service_ttl is set, so against Consul the floor is the refresh interval: one
	// query per second per watched name to the local agent, which is cheap, and a departure is seen
	// within a second.
	DefaultMinRefresh = time.Second
	// DefaultMaxRefresh is the ceiling of the refresh interval: an answer with a long TTL is still
	// checked this often, because a record's TTL says how long it may be cached, not when it changes.
	DefaultMaxRefresh = 30 * time.Second
	// DefaultTimeout bounds one exchange with one server (UDP, or TCP after a truncated answer).
	DefaultTimeout = 2 * time.Second
	// DefaultBackoffBase and DefaultBackoffMax bound the full-jitter backoff after failed refreshes.
	DefaultBackoffBase = 250 * time.Millisecond
	DefaultBackoffMax  = 10 * time.Second
	// DefaultUDPSize is the EDNS0 buffer size advertised in queries: the size DNS Flag Day 2020
	// recommends, which avoids IP fragmentation; bigger answers come back truncated and are asked
	// again over TCP.
	DefaultUDPSize = 1232
)

// Option configures a Resolver.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// Dialer opens a connection to a DNS server; network is "udp" or "tcp". net.Dialer.DialContext is one.
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

type options struct {
	obs.Sinks
	servers    []string
	minRefresh time.Duration
	maxRefresh time.Duration
	timeout    time.Duration
	maxStale   time.Duration
	backoff    backoff.Policy
	dial       Dialer
}

func newOptions(opts []Option) options {
	o := options{
		Sinks:      obs.Defaults(),
		minRefresh: DefaultMinRefresh,
		maxRefresh: DefaultMaxRefresh,
		timeout:    DefaultTimeout,
		backoff:    backoff.Policy{Base: DefaultBackoffBase, Max: DefaultBackoffMax},
		dial:       (&net.Dialer{}).DialContext,
	}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	o.maxRefresh = max(o.maxRefresh, o.minRefresh)
	return o
}

// WithServers sets the DNS servers to ask, as "host:port" (Consul's DNS interface listens on port
// 8600), tried in order until one answers. The default is the nameservers of /etc/resolv.conf, on
// port 53.
func WithServers(addrs ...string) Option {
	return optionFunc(func(o *options) {
		if len(addrs) > 0 {
			o.servers = append([]string(nil), addrs...)
		}
	})
}

// WithRefresh bounds the refresh interval: a name is asked again after the smallest TTL of its last
// answer, but never sooner than floor nor later than ceiling. Defaults DefaultMinRefresh and
// DefaultMaxRefresh; a value of zero or less keeps its default, and a ceiling below the floor is
// raised to it.
func WithRefresh(floor, ceiling time.Duration) Option {
	return optionFunc(func(o *options) {
		if floor > 0 {
			o.minRefresh = floor
		}
		if ceiling > 0 {
			o.maxRefresh = ceiling
		}
	})
}

// WithTimeout bounds one exchange with one server; default DefaultTimeout.
func WithTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	})
}

// WithBackoff sets the full-jitter exponential backoff between refreshes after errors: the n-th
// consecutive failure waits a uniform random time below min(max, base·2^(n-1)). Defaults
// DefaultBackoffBase, DefaultBackoffMax.
func WithBackoff(base, maxDelay time.Duration) Option {
	return optionFunc(func(o *options) { o.backoff = backoff.Policy{Base: base, Max: maxDelay} })
}

// WithMaxStaleness drops the last known list at the first failed refresh that finds it older than d:
// the watch then reports no instances with an Err wrapping discovery.ErrStale until a refresh
// succeeds. Zero (the default) keeps the last known list for as long as the servers fail.
func WithMaxStaleness(d time.Duration) Option {
	return optionFunc(func(o *options) { o.maxStale = max(d, 0) })
}

// WithDialer sets how connections to the servers are opened (a proxy, a particular source address,
// or an in-memory server in tests); default net.Dialer.DialContext.
func WithDialer(d Dialer) Option {
	return optionFunc(func(o *options) {
		if d != nil {
			o.dial = d
		}
	})
}

// WithMeterProvider sets where metrics go; the default is a no-op provider.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.SetMeterProvider(mp) })
}

// WithLogger sets the logger for failed and recovered refreshes; the default discards.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.SetLogger(l) })
}
