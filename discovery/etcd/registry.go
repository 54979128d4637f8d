package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/internal/feed"
	"github.com/cloudchassis/kit/internal/obs"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// errSilent ends a watch that heard nothing from etcd, not even an answer to a progress request,
// for two progress intervals.
var errSilent = errors.New("no word from etcd on the watch stream")

// errClosedStream ends a watch whose channel clientv3 closed without an error (the client closed).
var errClosedStream = errors.New("watch channel closed")

// Registry runs the etcd watches of a process: one prefix watch per service however many callers
// watch it. Watch hands out reference-counted Watchers; the etcd watch stops when the last of them is
// closed, or when the Registry is closed. All watches share one gRPC watch stream to etcd.
//
// A Registry is safe for concurrent use. Its goroutines are stopped by Close, which does not close
// the client: close the client after the Registry.
type Registry struct {
	kv      clientv3.KV
	watcher clientv3.Watcher // the Registry's own, closed by Close
	opts    options
	metrics registryMetrics
	cb      metric.Registration

	mu      sync.Mutex
	watches map[string]*watch
	closed  bool
}

// NewRegistry returns a Registry that lists and watches through client. Options: WithPrefix,
// WithConsistency, WithMaxStaleness, WithProgressInterval, WithRequestTimeout, WithBackoff,
// WithMeterProvider, WithLogger.
func NewRegistry(client *clientv3.Client, opts ...Option) (*Registry, error) {
	if client == nil {
		return nil, errors.New("etcd: NewRegistry: nil client")
	}
	return newRegistry(client.KV, clientv3.NewWatcher(client), opts)
}

// newRegistry lists through kv and watches through watcher, which it owns (Close closes it).
func newRegistry(kv clientv3.KV, watcher clientv3.Watcher, opts []Option) (*Registry, error) {
	r := &Registry{kv: kv, watcher: watcher, opts: newOptions(opts), watches: map[string]*watch{}}
	in := obs.NewInstruments(r.opts.Meters, semconv.ScopeDiscovery)
	r.metrics = newRegistryMetrics(in)
	r.cb = in.Register(r.observe, r.metrics.age, r.metrics.insts)
	if err := in.Err(); err != nil {
		_ = r.watcher.Close()
		return nil, fmt.Errorf("etcd: metrics: %w", err)
	}
	return r, nil
}

// Watch returns a Watcher for the instances of service. Callers of the same service share one etcd
// watch. The Watcher's Close releases it; it must be called.
func (r *Registry) Watch(service string) (*Watcher, error) {
	if service == "" {
		return nil, errors.New("etcd: Watch: empty service name")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, discovery.ErrClosed
	}
	w := r.watches[service]
	if w == nil {
		w = &watch{
			r: r, service: service, prefix: ServiceKey(r.opts.prefix, service),
			log:   r.opts.Logger.With(slog.String(semconv.AttrPeerService, service)),
			attrs: serviceAttrs(service),
			done:  make(chan struct{}),
			feed:  feed.Feed{Cur: discovery.Snapshot{Service: service}},
		}
		r.watches[service] = w
		ctx, cancel := context.WithCancel(context.Background())
		w.cancel = cancel
		go w.run(ctx)
	}
	w.refs++
	return &Watcher{r: r, w: w, done: make(chan struct{})}, nil
}

// Close stops every watch and waits for their goroutines. Watchers then return discovery.ErrClosed.
// Close is idempotent and always returns nil.
func (r *Registry) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	ws := make([]*watch, 0, len(r.watches))
	for _, w := range r.watches {
		ws = append(ws, w)
	}
	clear(r.watches)
	r.mu.Unlock()
	for _, w := range ws {
		w.cancel()
	}
	for _, w := range ws {
		<-w.done
	}
	_ = r.watcher.Close()
	if r.cb != nil {
		_ = r.cb.Unregister()
	}
	return nil
}

func (r *Registry) release(w *watch) {
	r.mu.Lock()
	w.refs--
	last := w.refs == 0
	if last && r.watches[w.service] == w {
		delete(r.watches, w.service)
	}
	r.mu.Unlock()
	if last {
		w.cancel()
		<-w.done
	}
}

func (r *Registry) observe(_ context.Context, o metric.Observer) error {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.watches {
		w.mu.Lock()
		age := 0.0
		if w.feed.Cur.Err != nil && !w.feed.Cur.Updated.IsZero() {
			age = now.Sub(w.feed.Cur.Updated).Seconds()
		}
		n := len(w.feed.Cur.Instances)
		w.mu.Unlock()
		o.ObserveFloat64(r.metrics.age, age, w.attrs)
		o.ObserveInt64(r.metrics.insts, int64(n), w.attrs)
	}
	return nil
}

// Watcher is one caller's handle on a shared watch. It implements discovery.Watcher and is safe for
// concurrent use. Close releases it.
type Watcher struct {
	r    *Registry
	w    *watch
	done chan struct{}
	once sync.Once
}

var _ discovery.Watcher = (*Watcher)(nil)

// Next blocks until the watch has a snapshot with a Version above after, then returns it. The first
// snapshot is published after the first list, successful or not: a failed first list gives an empty
// snapshot whose Err says why, and the watch keeps retrying.
//
// While etcd fails, snapshots keep the last known good instances with Err set and Updated frozen at
// the last moment etcd confirmed them; Err is nil again once the watch lists again.
func (h *Watcher) Next(ctx context.Context, after uint64) (discovery.Snapshot, error) {
	return feed.Next(ctx, &h.w.mu, &h.w.feed, after, h.done)
}

// Close releases the handle; the shared watch stops when its last handle is closed. Blocked and later
// calls to Next return discovery.ErrClosed. Close is idempotent and returns nil.
func (h *Watcher) Close() error {
	h.once.Do(func() {
		close(h.done)
		h.r.release(h.w)
	})
	return nil
}

// watch is one service's list-then-watch loop and the latest snapshot it produced.
type watch struct {
	r       *Registry
	service string
	prefix  string
	log     *slog.Logger
	attrs   metric.MeasurementOption
	refs    int // guarded by r.mu
	cancel  context.CancelFunc
	done    chan struct{}

	mu    sync.Mutex
	feed  feed.Feed
	stale *time.Timer // drops the list after maxStale of failures
}

// run lists and watches until ctx ends, starting over after every failure with backoff. A
// compaction that overtook the watch is not a failure: the watch lists again at once.
func (w *watch) run(ctx context.Context) {
	defer close(w.done)
	defer w.stop()
	failures := 0
	for {
		if failures > 0 {
			t := time.NewTimer(w.r.opts.backoff.Delay(failures))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		listed, err := w.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if listed {
			failures = 0
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			w.log.Info("etcd: watch revision compacted; listing again", slog.Any("error", err))
			continue
		}
		failures++
		w.r.metrics.errors.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(
			attribute.String(semconv.AttrPeerService, w.service), attribute.String(semconv.AttrErrorType, errorType(err)))))
		w.fail(err)
		w.log.Warn("etcd: discovery watch failed", slog.Any("error", err), slog.Int("failures", failures))
	}
}

// session lists the service's prefix, publishes the list and follows it from the list's revision
// until the watch fails. listed reports whether the list succeeded.
func (w *watch) session(ctx context.Context) (listed bool, err error) {
	o := &w.r.opts
	w.r.metrics.queries.Add(ctx, 1, w.attrs)
	getOpts := []clientv3.OpOption{clientv3.WithPrefix()}
	wctx := ctx
	if o.consistency == Serializable {
		getOpts = append(getOpts, clientv3.WithSerializable())
	} else {
		// etcd cancels a require-leader watch once its member has had no leader for a few election
		// timeouts; without it, a watch on a member cut off from the quorum stays open and silent.
		wctx = clientv3.WithRequireLeader(ctx)
	}
	gctx, cancel := context.WithTimeout(wctx, o.timeout)
	resp, err := w.r.kv.Get(gctx, w.prefix, getOpts...)
	cancel()
	if err != nil {
		return false, fmt.Errorf("list %s: %w", w.prefix, err)
	}
	set := make(map[string]discovery.Instance, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		w.apply(set, mvccpb.PUT, kv)
	}
	w.succeed(sorted(set))

	wctx, stop := context.WithCancel(wctx)
	defer stop()
	ch := w.r.watcher.Watch(wctx, w.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1),
		clientv3.WithProgressNotify())
	tick := time.NewTicker(o.progress)
	defer tick.Stop()
	heard := time.Now()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-tick.C:
			if silent := time.Since(heard); silent >= 2*o.progress {
				return true, fmt.Errorf("watch %s: %w for %s", w.prefix, errSilent, silent.Round(time.Millisecond))
			}
			if time.Since(heard) >= o.progress {
				pctx, cancel := context.WithTimeout(wctx, o.progress)
				_ = w.r.watcher.RequestProgress(pctx) // no answer in time is what the check above sees
				cancel()
			}
		case wr, ok := <-ch:
			if !ok {
				return true, fmt.Errorf("watch %s: %w", w.prefix, errClosedStream)
			}
			if err := wr.Err(); err != nil {
				return true, fmt.Errorf("watch %s: %w", w.prefix, err)
			}
			heard = time.Now()
			if len(wr.Events) == 0 {
				w.confirm(heard) // a progress notification: the list is current
				continue
			}
			for _, ev := range wr.Events {
				w.apply(set, ev.Type, ev.Kv)
			}
			w.succeed(sorted(set))
		}
	}
}

// apply records one key's change in set. A value that is not an instance is logged and left out.
func (w *watch) apply(set map[string]discovery.Instance, typ mvccpb.Event_EventType, kv *mvccpb.KeyValue) {
	key := string(kv.Key)
	if typ == mvccpb.DELETE {
		delete(set, key)
		return
	}
	inst, err := decode(key, kv.Value)
	if err != nil {
		w.log.Warn("etcd: ignoring a key that is not an instance", slog.Any("error", err))
		delete(set, key)
		return
	}
	set[key] = inst
}

// publish makes s the current snapshot with the next version. w.mu must be held.
func (w *watch) publish(s discovery.Snapshot) {
	s.Service = w.service
	w.feed.Publish(s)
	w.r.metrics.updates.Add(context.Background(), 1, w.attrs)
}

func (w *watch) succeed(insts []discovery.Instance) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stale != nil {
		w.stale.Stop()
		w.stale = nil
	}
	if w.feed.Cur.Version > 0 && w.feed.Cur.Err == nil && slices.EqualFunc(w.feed.Cur.Instances, insts, discovery.Instance.Equal) {
		w.feed.Cur.Updated = now // confirmed, unchanged: no new version, nobody is woken up
		return
	}
	w.publish(discovery.Snapshot{Instances: insts, Updated: now})
}

// confirm moves Updated of a healthy snapshot without waking anyone.
func (w *watch) confirm(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.feed.Cur.Err == nil {
		w.feed.Cur.Updated = now
	}
}

func (w *watch) fail(err error) {
	werr := fmt.Errorf("etcd: watch %q: %w", w.service, err)
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.feed.Cur.Version == 0:
		w.publish(discovery.Snapshot{Err: werr}) // callers are not left waiting: no instances, and why
	case w.feed.Cur.Err == nil:
		next := w.feed.Cur // Updated stays at the last confirmation: the list's age grows from there
		next.Err = werr
		w.publish(next)
		if o := w.r.opts; o.maxStale > 0 && len(next.Instances) > 0 {
			w.stale = time.AfterFunc(max(0, time.Until(next.Updated.Add(o.maxStale))), w.dropStale)
		}
	default:
		w.feed.Cur.Err = werr // same state, fresher reason: no new version
	}
}

func (w *watch) dropStale() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.feed.Cur.Err == nil || len(w.feed.Cur.Instances) == 0 {
		return
	}
	age := time.Since(w.feed.Cur.Updated).Round(time.Millisecond)
	w.publish(discovery.Snapshot{
		Updated: w.feed.Cur.Updated,
		Err: fmt.Errorf("%w: %q last confirmed %s ago (maximum %s): %w",
			discovery.ErrStale, w.service, age, w.r.opts.maxStale, w.feed.Cur.Err),
	})
}

// stop wakes every waiting Next with discovery.ErrClosed.
func (w *watch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stale != nil {
		w.stale.Stop()
		w.stale = nil
	}
	w.feed.Close()
}
