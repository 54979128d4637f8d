package consul

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/internal/feed"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// requestSlack is added to a blocking query's own deadline (wait plus Consul's wait/16 jitter) before
// the request is abandoned: a connection that died without a reset is noticed within that much.
const requestSlack = 5 * time.Second

// minHoldWait is the shortest blocking query a watch sends while it holds a list (WithResetGrace):
// Consul treats a wait that rounds to 0 ms as its 5-minute default.
const minHoldWait = time.Second

// ErrUnconfirmedEmpty is wrapped by a snapshot's Err while a watch keeps its last non-empty list
// because Consul answered with no instances right after a reset (see WithResetGrace).
var ErrUnconfirmedEmpty = errors.New("consul: empty instance list right after a reset, not yet confirmed")

// Registry runs the Consul watches of a process: one blocking query per distinct (service, options)
// however many callers watch it. Watch hands out reference-counted Watchers; the query stops when the
// last of them is closed, or when the Registry is closed.
//
// A Registry is safe for concurrent use. Its goroutines are stopped by Close.
type Registry struct {
	health  Health
	opts    options
	metrics *feed.Metrics
	pool    feed.Pool
}

// NewRegistry returns a Registry that queries h (usually NewClient(apiClient)). Options: WithBackoff,
// WithMinInterval, WithMeterProvider, WithLogger.
func NewRegistry(h Health, opts ...Option) (*Registry, error) {
	if h == nil {
		return nil, errors.New("consul: NewRegistry: nil Health client")
	}
	r := &Registry{health: h, opts: newOptions(opts)}
	var err error
	if r.metrics, err = feed.NewMetrics(r.opts.Meters, &r.pool, MetricQueries, "Queries sent to Consul by discovery watches."); err != nil {
		return nil, fmt.Errorf("consul: metrics: %w", err)
	}
	return r, nil
}

// Watch returns a Watcher for the healthy (passing) instances of service. Callers with the same service
// and options share one blocking query. The Watcher's Close releases it; it must be called.
//
// The defaults are stale reads, DefaultWaitTime, no tag or meta filter, the agent's datacenter, no
// maximum staleness and DefaultResetGrace.
func (r *Registry) Watch(service string, opts ...WatchOption) (*Watcher, error) {
	if service == "" {
		return nil, errors.New("consul: Watch: empty service name")
	}
	cfg := watchConfig{wait: DefaultWaitTime, resetGrace: DefaultResetGrace}
	for _, o := range opts {
		if o != nil {
			o.applyWatch(&cfg)
		}
	}
	h, err := r.pool.Watch(cfg.key(service), service, func(s *feed.Shared) func(context.Context) {
		return newWatch(r, service, cfg, s).run
	})
	if err != nil {
		return nil, err
	}
	return &Watcher{h}, nil
}

// Close stops every watch and waits for their goroutines. Watchers then return discovery.ErrClosed.
// Close is idempotent and always returns nil.
func (r *Registry) Close() error {
	r.pool.Close()
	r.metrics.Unregister()
	return nil
}

// Watcher is one caller's handle on a shared watch. It implements discovery.Watcher and is safe for
// concurrent use. Close releases it.
type Watcher struct{ h *feed.Handle }

var _ discovery.Watcher = (*Watcher)(nil)

// Next blocks until the watch has a snapshot with a Version above after, then returns it. The first
// snapshot is published after the first query returns, successful or not: a failed first query gives
// an empty snapshot whose Err says why, and the watch keeps retrying.
//
// While Consul fails, snapshots keep the last known good instances with Err set and Updated frozen at
// the last moment Consul confirmed them; Err is nil again after the next successful query.
func (h *Watcher) Next(ctx context.Context, after uint64) (discovery.Snapshot, error) {
	return h.h.Next(ctx, after)
}

// Close releases the handle; the shared query stops when its last handle is closed. Blocked and later
// calls to Next return discovery.ErrClosed. Close is idempotent and returns nil.
func (h *Watcher) Close() error { return h.h.Close() }

// watch is one blocking-query loop and the latest snapshot it produced.
type watch struct {
	r       *Registry
	service string
	cfg     watchConfig
	backoff backoff.Policy
	log     *slog.Logger
	attrs   metric.MeasurementOption

	s       *feed.Shared // the snapshot; s.Mu guards it and the fields below
	stopped bool
	stale   *time.Timer // drops the list after cfg.maxStale of failures
}

func newWatch(r *Registry, service string, cfg watchConfig, s *feed.Shared) *watch {
	return &watch{
		r: r, service: service, cfg: cfg, s: s,
		backoff: r.opts.backoff,
		log:     r.opts.Logger.With(slog.String(semconv.AttrPeerService, service)),
		attrs:   feed.ServiceAttrs(service),
	}
}

func (w *watch) run(ctx context.Context) {
	defer w.stop()
	var (
		index     uint64 // the index the next query waits on
		lastIndex uint64 // the index of the last successful answer, kept across failures
		failures  int
		nextStart time.Time
		limit     = newQueryLimiter(w.r.opts.minInterval, time.Now())
		// reset is set when the agent's state may have been reset since the last answer was published:
		// a query failed (the agent may have restarted without its data), or the index went backwards.
		reset bool
		// holdUntil, when set, is the end of the grace during which an empty answer after a reset does
		// not replace the last non-empty list (WithResetGrace).
		holdUntil time.Time
	)
	for {
		if d := time.Until(nextStart); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		start := time.Now()
		wait := w.cfg.wait
		if !holdUntil.IsZero() {
			// Return by the end of the grace even if nothing changes, to honour the empty list then.
			wait = min(wait, max(holdUntil.Sub(start), minHoldWait))
		}
		entries, meta, err := w.query(ctx, index, wait)
		if ctx.Err() != nil {
			return
		}
		w.r.metrics.Queries.Add(ctx, 1, w.attrs)
		end := time.Now()
		if err == nil && meta == nil {
			err = errors.New("response without query metadata")
		}
		if err != nil {
			failures++
			w.r.metrics.Errors.Add(ctx, 1, feed.ErrorAttrs(w.service, errorType(err)))
			w.fail(err, start, end)
			delay := w.backoff.Delay(failures)
			w.log.Warn("consul: discovery query failed", slog.Any("error", err),
				slog.Int("failures", failures), slog.Duration("retry_in", delay))
			nextStart = end.Add(delay)
			// The first query after an error must not block: it confirms the list (and clears Err) at
			// once instead of after a full wait with nothing changed.
			index = 0
			reset = true
			continue
		}
		if failures > 0 {
			w.log.Info("consul: discovery query recovered", slog.Int("failures", failures))
		}
		failures = 0
		nextStart = limit.next(end)
		if meta.LastIndex < lastIndex {
			reset = true
			w.log.Warn("consul: discovery index went backwards; starting over",
				slog.Uint64("index", meta.LastIndex), slog.Uint64("previous", lastIndex))
		}
		lastIndex = meta.LastIndex
		index = nextIndex(index, meta.LastIndex)
		insts := toInstances(entries)
		if reset && len(insts) == 0 && w.cfg.resetGrace > 0 {
			first := holdUntil.IsZero()
			if first {
				holdUntil = end.Add(w.cfg.resetGrace)
			}
			if !end.Before(holdUntil) {
				w.log.Warn("consul: empty instance list confirmed after the reset grace; publishing it",
					slog.Duration("grace", w.cfg.resetGrace))
			} else if n := w.hold(holdUntil); n > 0 {
				if first {
					w.log.Warn("consul: empty instance list right after a reset; keeping the last known list until it is confirmed",
						slog.Int("instances", n), slog.Duration("grace", w.cfg.resetGrace))
				}
				continue
			}
		}
		reset, holdUntil = false, time.Time{}
		w.succeed(insts, end)
	}
}

// queryBurst is how many queries may follow each other without waiting for the minimum interval.
// Consul often commits one change in two or three raft writes (the service, then its checks), each of
// which ends a blocking query; the burst lets all of them through at once, while a flapping index is
// still held to one query per minimum interval on average.
const queryBurst = 3

// queryLimiter is a token bucket: queryBurst tokens, one more per interval.
type queryLimiter struct {
	interval time.Duration
	tokens   float64
	last     time.Time
}

func newQueryLimiter(interval time.Duration, now time.Time) *queryLimiter {
	return &queryLimiter{interval: interval, tokens: queryBurst, last: now}
}

// next takes a token for the query after a success at now and returns when that query may start.
func (l *queryLimiter) next(now time.Time) time.Time {
	l.tokens = min(queryBurst, l.tokens+float64(now.Sub(l.last))/float64(l.interval))
	l.last = now
	l.tokens--
	if l.tokens >= 0 {
		return now
	}
	return now.Add(time.Duration(-l.tokens * float64(l.interval)))
}

// nextIndex applies Consul's rules for blocking-query indexes: start over with a non-blocking read when
// the index goes backwards (a server was restored or the raft index reset), and never block on index 0,
// which returns at once and would loop.
func nextIndex(prev, got uint64) uint64 {
	if got < prev {
		return 0
	}
	return max(got, 1)
}

func (w *watch) query(ctx context.Context, index uint64, wait time.Duration) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	q := &api.QueryOptions{
		Datacenter: w.cfg.datacenter,
		Filter:     w.cfg.filter,
		WaitIndex:  index,
		WaitTime:   wait,
	}
	switch w.cfg.consistency {
	case Stale:
		q.AllowStale = true
	case Consistent:
		q.RequireConsistent = true
	case Cached:
		q.UseCache = true
		q.AllowStale = true
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout(wait))
	defer cancel()
	return w.r.health.Service(ctx, w.service, w.cfg.tags, true, q)
}

// requestTimeout bounds a blocking query of the given wait: Consul adds up to wait/16 of jitter.
func requestTimeout(wait time.Duration) time.Duration { return wait + wait/16 + requestSlack }

// publish makes s the current snapshot with the next version. w.mu must be held.
func (w *watch) publish(s discovery.Snapshot) {
	s.Service = w.service
	w.s.Feed.Publish(s)
	w.r.metrics.Updates.Add(context.Background(), 1, w.attrs)
}

func (w *watch) succeed(insts []discovery.Instance, now time.Time) {
	w.s.Mu.Lock()
	defer w.s.Mu.Unlock()
	if w.stale != nil {
		w.stale.Stop()
		w.stale = nil
	}
	if w.s.Feed.Cur.Version > 0 && w.s.Feed.Cur.Err == nil && slices.EqualFunc(w.s.Feed.Cur.Instances, insts, discovery.Instance.Equal) {
		w.s.Feed.Cur.Updated = now // confirmed, unchanged: no new version, nobody is woken up
		return
	}
	w.publish(discovery.Snapshot{Instances: insts, Updated: now})
}

func (w *watch) fail(err error, start, end time.Time) {
	werr := fmt.Errorf("consul: watch %q: %w", w.service, err)
	w.s.Mu.Lock()
	defer w.s.Mu.Unlock()
	switch {
	case w.s.Feed.Cur.Version == 0:
		// A failed first query still publishes, so callers are not stuck waiting (Kratos #2911): they
		// see no instances and why, and the loop keeps trying.
		w.publish(discovery.Snapshot{Err: werr})
	case w.s.Feed.Cur.Err == nil:
		// The list was current while the previous blocking query was connected. A query that ended with
		// a connection error or an error answer had a live agent until it ended; one that timed out
		// tells nothing after its start.
		confirmed := end
		if errors.Is(err, context.DeadlineExceeded) {
			confirmed = start
		}
		next := w.s.Feed.Cur
		next.Err, next.Updated = werr, confirmed
		w.publish(next)
		if w.cfg.maxStale > 0 && len(next.Instances) > 0 {
			w.stale = time.AfterFunc(max(0, time.Until(confirmed.Add(w.cfg.maxStale))), w.dropStale)
		}
	default:
		w.s.Feed.Cur.Err = werr // same state, fresher reason: no new version
	}
}

// hold keeps the current list while an empty answer after a reset is unconfirmed, and returns its
// length; 0 means there is nothing to keep and the empty answer is to be published. The kept list is
// not confirmed either, so Updated stays where it was and Err says why; a snapshot that already
// carries an error (the outage that preceded the reset) only gets the fresher reason, without a new
// version.
func (w *watch) hold(until time.Time) int {
	w.s.Mu.Lock()
	defer w.s.Mu.Unlock()
	n := len(w.s.Feed.Cur.Instances)
	if n == 0 {
		return 0
	}
	werr := fmt.Errorf("consul: watch %q: %w; keeping the last %d instances until %s unless they register again",
		w.service, ErrUnconfirmedEmpty, n, until.Format(time.RFC3339))
	if w.s.Feed.Cur.Err != nil {
		w.s.Feed.Cur.Err = werr
		return n
	}
	next := w.s.Feed.Cur
	next.Err = werr
	w.publish(next)
	return n
}

func (w *watch) dropStale() {
	w.s.Mu.Lock()
	defer w.s.Mu.Unlock()
	if w.stopped || w.s.Feed.Cur.Err == nil || len(w.s.Feed.Cur.Instances) == 0 {
		return
	}
	age := time.Since(w.s.Feed.Cur.Updated).Round(time.Millisecond)
	w.publish(discovery.Snapshot{
		Updated: w.s.Feed.Cur.Updated,
		Err:     fmt.Errorf("%w: %q last confirmed %s ago (maximum %s): %w", discovery.ErrStale, w.service, age, w.cfg.maxStale, w.s.Feed.Cur.Err),
	})
}

// stop marks the watch stopped; the pool then closes the feed, which wakes every waiting Next.
func (w *watch) stop() {
	w.s.Mu.Lock()
	defer w.s.Mu.Unlock()
	if w.stale != nil {
		w.stale.Stop()
		w.stale = nil
	}
	w.stopped = true
}

func toInstances(entries []*api.ServiceEntry) []discovery.Instance {
	out := make([]discovery.Instance, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Service == nil {
			continue
		}
		addr := e.Service.Address
		if addr == "" && e.Node != nil {
			addr = e.Node.Address // Consul's rule: a service without an address uses its node's
		}
		// Tags and Meta were decoded for this response only, so the snapshot can own them.
		out = append(out, discovery.Instance{
			ID: e.Service.ID, Address: addr, Port: e.Service.Port,
			Tags: e.Service.Tags, Meta: e.Service.Meta, Weight: e.Service.Weights.Passing,
		})
	}
	slices.SortFunc(out, func(a, b discovery.Instance) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
	})
	return out
}

func (c watchConfig) key(service string) string {
	tags := slices.Clone(c.tags)
	slices.Sort(tags)
	tags = slices.Compact(tags)
	return strings.Join([]string{
		service, strings.Join(tags, "\x01"), c.filter, c.datacenter, c.consistency.String(),
		c.wait.String(), c.maxStale.String(), c.resetGrace.String(),
	}, "\x00")
}
