package dynconfig

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/internal/obs"
)

// KV is the part of the Consul API a Config uses: a recursive read of a prefix, which supports
// blocking queries through q.WaitIndex and q.WaitTime. *ConsulKV implements it;
// coordinationtest.Consul is an in-memory fake.
type KV interface {
	List(ctx context.Context, prefix string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error)
}

// ConsulKV adapts a *api.Client to KV. It is safe for concurrent use.
type ConsulKV struct{ c *api.Client }

var _ KV = (*ConsulKV)(nil)

// NewConsulKV wraps c.
func NewConsulKV(c *api.Client) *ConsulKV { return &ConsulKV{c: c} }

// List implements KV.
func (k *ConsulKV) List(ctx context.Context, prefix string, q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error) {
	if q == nil {
		q = &api.QueryOptions{}
	}
	return k.c.KV().List(prefix, q.WithContext(ctx))
}

// Defaults of a Config's options.
const (
	// DefaultWaitTime bounds one blocking query. Shorter than Consul's 5 minutes so that a silently
	// dead connection is noticed.
	DefaultWaitTime = time.Minute
	// DefaultMinInterval is the least time between the starts of two queries: a burst of KV writes
	// (or a server that answers at once) cannot turn the watch into a tight loop, and a change still
	// arrives within this much.
	DefaultMinInterval = 100 * time.Millisecond
	// DefaultBackoffBase and DefaultBackoffMax bound the full-jitter backoff after failed queries.
	DefaultBackoffBase = 250 * time.Millisecond
	DefaultBackoffMax  = 10 * time.Second
)

// Option configures a Config.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	lookup      config.Lookup
	envPrefix   string
	readFile    func(string) ([]byte, error)
	consistent  bool
	waitTime    time.Duration
	minInterval time.Duration
	backoff     backoff.Policy
	obs.Sinks
}

func newOptions(opts []Option) options {
	o := options{
		lookup:      os.LookupEnv,
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

// WithLookup reads the environment through l (default os.LookupEnv, as config.Load). KV values are
// overlaid on it.
func WithLookup(l config.Lookup) Option {
	return optionFunc(func(o *options) {
		if l != nil {
			o.lookup = l
		}
	})
}

// WithEnvPrefix applies config.WithPrefix: variable names, and so KV key names, get PREFIX_.
func WithEnvPrefix(prefix string) Option {
	return optionFunc(func(o *options) { o.envPrefix = prefix })
}

// WithReadFile replaces os.ReadFile for NAME_FILE variables (config.WithReadFile).
func WithReadFile(f func(name string) ([]byte, error)) Option {
	return optionFunc(func(o *options) { o.readFile = f })
}

// WithConsistent makes the watch use consistent reads instead of Consul's default mode (served by
// the leader without a quorum check). Configuration tolerates a read a few milliseconds old, so the
// default is the cheaper read; stale reads are never used, so a server in a minority partition
// cannot serve an old configuration indefinitely.
func WithConsistent() Option { return optionFunc(func(o *options) { o.consistent = true }) }

// WithWaitTime bounds one blocking query (default DefaultWaitTime).
func WithWaitTime(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.waitTime = d
		}
	})
}

// WithMinInterval sets the least time between two queries (default DefaultMinInterval).
func WithMinInterval(d time.Duration) Option {
	return optionFunc(func(o *options) { o.minInterval = max(d, 0) })
}

// WithBackoff sets the backoff after failed queries (default DefaultBackoffBase to DefaultBackoffMax,
// full jitter).
func WithBackoff(base, maxDelay time.Duration) Option {
	return optionFunc(func(o *options) { o.backoff = backoff.Policy{Base: base, Max: maxDelay} })
}

// WithLogger sets the logger for applied and rejected changes and watch errors (default: discard).
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.SetLogger(l) })
}

// WithMeterProvider sets where metrics go. The default is a no-op provider: the package never reads
// the OpenTelemetry globals.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.SetMeterProvider(mp) })
}
