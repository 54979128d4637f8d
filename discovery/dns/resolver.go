package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/internal/feed"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Resolver runs the DNS watches of a process: one refresh loop per distinct (name, options) however
// many callers watch it. Watch hands out reference-counted Watchers; the loop stops when the last of
// them is closed, or when the Resolver is closed.
//
// A Resolver is safe for concurrent use. Its goroutines are stopped by Close.
type Resolver struct {
	opts    options
	client  *client
	metrics *feed.Metrics
	pool    feed.Pool
}

// New returns a Resolver. Options: WithServers (default: /etc/resolv.conf's nameservers), WithRefresh,
// WithTimeout, WithBackoff, WithMaxStaleness, WithDialer, WithMeterProvider, WithLogger.
func New(opts ...Option) (*Resolver, error) {
	o := newOptions(opts)
	if len(o.servers) == 0 {
		o.servers = systemServers()
	}
	for _, s := range o.servers {
		if _, _, err := splitHostPort(s); err != nil {
			return nil, fmt.Errorf("dns: server %q: %w", s, err)
		}
	}
	r := &Resolver{opts: o, client: &client{servers: o.servers, timeout: o.timeout, dial: o.dial}}
	var err error
	if r.metrics, err = feed.NewMetrics(o.Meters, &r.pool, MetricQueries, "DNS questions sent by discovery watches."); err != nil {
		return nil, fmt.Errorf("dns: metrics: %w", err)
	}
	return r, nil
}

// Servers returns the DNS servers the Resolver asks, in order.
func (r *Resolver) Servers() []string { return slices.Clone(r.opts.servers) }

// WatchOption configures one Resolver.Watch. Watches of the same name with the same options share one
// refresh loop.
type WatchOption interface{ applyWatch(*watchConfig) }

type watchOptionFunc func(*watchConfig)

func (f watchOptionFunc) applyWatch(c *watchConfig) { f(c) }

type watchConfig struct {
	port    int
	service string
}

// WithPort makes the watch resolve the name's A and AAAA records and give every address this port,
// instead of reading SRV records (which carry their own ports).
func WithPort(port int) WatchOption {
	return watchOptionFunc(func(c *watchConfig) { c.port = port })
}

// WithService sets the service name that snapshots carry and metrics report (semconv.AttrPeerService);
// default the DNS name.
func WithService(name string) WatchOption {
	return watchOptionFunc(func(c *watchConfig) { c.service = name })
}

// Watch returns a Watcher for the instances behind name: the targets of its SRV records (Consul's
// "<service>.service.consul", a Kubernetes headless service's "_<port>._tcp.<svc>.<ns>.svc.cluster.local"),
// or with WithPort its A and AAAA records. The name is taken as fully qualified: search domains are not
// applied. The Watcher's Close releases it; it must be called.
func (r *Resolver) Watch(name string, opts ...WatchOption) (*Watcher, error) {
	var cfg watchConfig
	for _, o := range opts {
		if o != nil {
			o.applyWatch(&cfg)
		}
	}
	if cfg.port < 0 || cfg.port > 65535 {
		return nil, fmt.Errorf("dns: Watch %q: port %d is not in 1-65535", name, cfg.port)
	}
	fq := strings.ToLower(strings.TrimSpace(name))
	if fq == "" || fq == "." {
		return nil, errors.New("dns: Watch: empty name")
	}
	if !strings.HasSuffix(fq, ".") {
		fq += "."
	}
	qname, err := dnsmessage.NewName(fq)
	if err == nil {
		err = checkLabels(fq)
	}
	if err != nil {
		return nil, fmt.Errorf("dns: Watch %q: %w", name, err)
	}
	if cfg.service == "" {
		cfg.service = strings.TrimSuffix(fq, ".")
	}
	key := fq + "\x00" + strconv.Itoa(cfg.port) + "\x00" + cfg.service
	h, err := r.pool.Watch(key, cfg.service, func(s *feed.Shared) func(context.Context) {
		w := &watch{
			r: r, name: qname, port: cfg.port, service: cfg.service, s: s,
			log:   r.opts.Logger.With(slog.String(semconv.AttrPeerService, cfg.service), slog.String("dns_name", fq)),
			attrs: feed.ServiceAttrs(cfg.service),
		}
		return w.run
	})
	if err != nil {
		return nil, err
	}
	return &Watcher{h}, nil
}

// Close stops every watch and waits for their goroutines. Watchers then return discovery.ErrClosed.
// Close is idempotent and always returns nil.
func (r *Resolver) Close() error {
	r.pool.Close()
	r.metrics.Unregister()
	return nil
}

// Watcher is one caller's handle on a shared watch. It implements discovery.Watcher and is safe for
// concurrent use. Close releases it.
type Watcher struct{ h *feed.Handle }

var _ discovery.Watcher = (*Watcher)(nil)

// Next blocks until the watch has a snapshot with a Version above after, then returns it. The first
// snapshot is published after the first refresh, successful or not: a failed first refresh gives an
// empty snapshot whose Err says why, and the watch keeps retrying.
//
// NXDOMAIN and answers without records are an empty list, not an error. While the servers fail
// (timeouts, SERVFAIL, REFUSED, malformed answers), snapshots keep the last known good instances with
// Err set and Updated frozen at the last successful refresh; Err is nil again after the next one.
func (h *Watcher) Next(ctx context.Context, after uint64) (discovery.Snapshot, error) {
	return h.h.Next(ctx, after)
}

// Close releases the handle; the shared loop stops when its last handle is closed. Blocked and later
// calls to Next return discovery.ErrClosed. Close is idempotent and returns nil.
func (h *Watcher) Close() error { return h.h.Close() }

// watch is one refresh loop and the latest snapshot it produced.
type watch struct {
	r       *Resolver
	name    dnsmessage.Name
	port    int // 0: SRV records
	service string
	log     *slog.Logger
	attrs   metric.MeasurementOption
	s       *feed.Shared // the snapshot, guarded by s.Mu
}

func (w *watch) run(ctx context.Context) {
	failures := 0
	for {
		insts, ttl, err := w.refresh(ctx)
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		var delay time.Duration
		if err != nil {
			failures++
			w.r.metrics.Errors.Add(ctx, 1, feed.ErrorAttrs(w.service, errorType(err)))
			w.fail(err, now)
			delay = w.r.opts.backoff.Delay(failures)
			w.log.Warn("dns: discovery refresh failed", slog.Any("error", err),
				slog.Int("failures", failures), slog.Duration("retry_in", delay))
		} else {
			if failures > 0 {
				w.log.Info("dns: discovery refresh recovered", slog.Int("failures", failures))
			}
			failures = 0
			w.succeed(insts, now)
			delay = w.interval(ttl)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// interval is the time to the next refresh after an answer whose smallest TTL is ttl seconds.
func (w *watch) interval(ttl uint32) time.Duration {
	o := w.r.opts
	if ttl == noTTL {
		return o.maxRefresh
	}
	return min(max(time.Duration(ttl)*time.Second, o.minRefresh), o.maxRefresh)
}

// ask sends one question and counts it.
func (w *watch) ask(ctx context.Context, name dnsmessage.Name, typ dnsmessage.Type) (*dnsmessage.Message, error) {
	w.r.metrics.Queries.Add(ctx, 1, w.attrs)
	return w.r.client.ask(ctx, name, typ)
}

// refresh resolves the watched name once and returns its instances and the smallest TTL among the
// records that made them.
func (w *watch) refresh(ctx context.Context) ([]discovery.Instance, uint32, error) {
	if w.port > 0 {
		addrs, ttl, err := w.addresses(ctx, w.name)
		if err != nil {
			return nil, 0, err
		}
		insts := make([]discovery.Instance, 0, len(addrs))
		for _, a := range addrs {
			insts = append(insts, instance(a.addr, w.port, 0))
		}
		return sortInstances(insts), ttl, nil
	}
	m, err := w.ask(ctx, w.name, dnsmessage.TypeSRV)
	if err != nil {
		return nil, 0, err
	}
	targets, known, ttl := srvAnswer(m)
	insts := make([]discovery.Instance, 0, len(targets))
	for _, t := range targets {
		addrs, ok := known[t.host]
		if !ok {
			// The server did not send the target's addresses along (Kubernetes and Consul do): ask.
			name, err := dnsmessage.NewName(t.host)
			if err != nil {
				return nil, 0, fmt.Errorf("dns: SRV target %q: %w", t.host, err)
			}
			var attl uint32
			if addrs, attl, err = w.addresses(ctx, name); err != nil {
				return nil, 0, err
			}
			known[t.host] = addrs
			ttl = min(ttl, attl)
		}
		for _, a := range addrs {
			ttl = min(ttl, a.ttl)
			insts = append(insts, instance(a.addr, t.port, t.weight))
		}
	}
	return sortInstances(insts), ttl, nil
}

// addresses resolves name's A and AAAA records. One family failing (some resolvers time out or
// answer SERVFAIL on AAAA) does not fail the other's answer, as with Go's own resolver; both failing
// is an error.
func (w *watch) addresses(ctx context.Context, name dnsmessage.Name) ([]addrTTL, uint32, error) {
	var all []addrTTL
	var errs []error
	ttl := uint32(noTTL)
	for _, typ := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
		m, err := w.ask(ctx, name, typ)
		if err != nil {
			if ctx.Err() != nil {
				return nil, 0, err
			}
			errs = append(errs, err)
			continue
		}
		a, t := addressAnswer(m)
		all = append(all, a...)
		ttl = min(ttl, t)
	}
	if len(errs) == 2 {
		return nil, 0, errors.Join(errs...)
	}
	return all, ttl, nil
}

// publish makes s the current snapshot with the next version. w.mu must be held.
func (w *watch) publish(s discovery.Snapshot) {
	s.Service = w.service
	w.s.Feed.Publish(s)
	w.r.metrics.Updates.Add(context.Background(), 1, w.attrs)
}

func (w *watch) succeed(insts []discovery.Instance, now time.Time) {
	w.s.Mu.Lock()
	defer w.s.Mu.Unlock()
	if w.s.Feed.Cur.Version > 0 && w.s.Feed.Cur.Err == nil && slices.EqualFunc(w.s.Feed.Cur.Instances, insts, discovery.Instance.Equal) {
		w.s.Feed.Cur.Updated = now // confirmed, unchanged: no new version, nobody is woken up
		return
	}
	w.publish(discovery.Snapshot{Instances: insts, Updated: now})
}

func (w *watch) fail(err error, now time.Time) {
	werr := fmt.Errorf("dns: watch %q: %w", w.service, err)
	w.s.Mu.Lock()
	defer w.s.Mu.Unlock()
	cur := w.s.Feed.Cur
	switch {
	case cur.Version == 0:
		// A failed first refresh still publishes, so callers are not stuck waiting: they see no
		// instances and why, and the loop keeps trying.
		w.publish(discovery.Snapshot{Err: werr})
	case w.r.opts.maxStale > 0 && len(cur.Instances) > 0 && now.Sub(cur.Updated) > w.r.opts.maxStale:
		w.publish(discovery.Snapshot{Updated: cur.Updated, Err: fmt.Errorf("%w: %q last confirmed %s ago (maximum %s): %w",
			discovery.ErrStale, w.service, now.Sub(cur.Updated).Round(time.Millisecond), w.r.opts.maxStale, werr)})
	case cur.Err == nil:
		cur.Err = werr // Updated stays at the last successful refresh: the list's age
		w.publish(cur)
	case errors.Is(cur.Err, discovery.ErrStale):
		// The list was dropped: keep saying so.
	default:
		w.s.Feed.Cur.Err = werr // same state, fresher reason: no new version
	}
}

// checkLabels rejects names that cannot be sent: an empty label ("a..b") or one over 63 bytes.
func checkLabels(fq string) error {
	for l := range strings.SplitSeq(strings.TrimSuffix(fq, "."), ".") {
		if l == "" || len(l) > 63 {
			return fmt.Errorf("label %q is empty or longer than 63 bytes", l)
		}
	}
	return nil
}
