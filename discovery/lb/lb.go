package lb

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudchassis/kit/discovery"
)

// ErrNoInstances is matched (errors.Is) by every error that says there was no instance to send a call
// to: none known yet, an empty service, or all of them ejected or unavailable.
var ErrNoInstances = errors.New("lb: no instances available")

// ErrClosed is returned by Run and Start after Close.
var ErrClosed = errors.New("lb: balancer closed")

// NoInstancesError is the error of a pick that found no instance. It matches ErrNoInstances.
type NoInstancesError struct {
	Service string
	// Instances is the number of instances in the current snapshot (0 for an empty service or when no
	// snapshot has arrived yet).
	Instances int
	// Reason says why none could be used: "no snapshot yet", "service has no instances", "all
	// instances ejected" or "no instance available".
	Reason string
}

func (e *NoInstancesError) Error() string {
	return fmt.Sprintf("lb: service %q: no instances available: %s (%d known)", e.Service, e.Reason, e.Instances)
}

// Is makes errors.Is(err, ErrNoInstances) true.
func (e *NoInstancesError) Is(target error) bool { return target == ErrNoInstances }

// Balancer spreads calls over the instances of one service. It follows a discovery.Watcher (New),
// or serves a fixed list (NewFixed), and rebuilds an immutable pick table on every change, so Pick
// never blocks and allocates nothing. Per-instance state (latency estimate, calls in flight, ejection)
// is kept for instances that stay, by instance ID, and dropped for instances that leave.
//
// A Balancer made by New does nothing until Run or Start; Close stops it. All methods are safe for
// concurrent use.
type Balancer struct {
	service  string
	w        discovery.Watcher
	opts     options
	tau      float64 // decay time constant in ns
	ejection bool
	// latencyEject: latency ejection is configured. slowNanos is the latency above which a call is
	// slow (float64 bits; 0 until enough instances have an estimate), recomputed when latencyStamp
	// (clock ns) is latencyRefresh old.
	latencyEject bool
	slowNanos    atomic.Uint64
	latencyStamp atomic.Int64
	epoch        time.Time
	rng          sync.Mutex // guards opts.src
	m            *instruments

	table       atomic.Pointer[Table]
	coarse      atomic.Int64 // the latest completion time: P2C's clock, so picks never read the clock
	nextReadmit atomic.Int64 // earliest ejectedUntil, or MaxInt64
	rr          atomic.Uint64
	ready       chan struct{}

	mu        sync.Mutex // guards everything below and Endpoint's ejection fields
	endpoints map[string]*Endpoint
	order     []*Endpoint // snapshot order
	ejected   int
	latBuf    []float64 // scratch for the median of latency estimates
	panicking bool
	readyOnce bool
	running   bool
	closed    bool
	cancel    context.CancelFunc
	stopped   chan struct{}
	runErr    error
}

// New returns a Balancer for service that follows w once Run or Start is called. Until the first
// snapshot arrives, picks fail with a NoInstancesError (Transport waits for it instead).
func New(service string, w discovery.Watcher, opts ...Option) (*Balancer, error) {
	if w == nil {
		return nil, errors.New("lb: nil watcher")
	}
	return newBalancer(service, w, opts)
}

// NewFixed returns a Balancer over a fixed list of instances, ready at once, for tests, static
// configuration and go-kit style use. Run and Start only wait for the stop; Close releases its metric
// callbacks.
func NewFixed(service string, instances []discovery.Instance, opts ...Option) (*Balancer, error) {
	b, err := newBalancer(service, nil, opts)
	if err != nil {
		return nil, err
	}
	b.update(instances)
	return b, nil
}

func newBalancer(service string, w discovery.Watcher, opts []Option) (*Balancer, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt.apply(&o)
	}
	var errs []error
	if service == "" {
		errs = append(errs, errors.New("lb: empty service name"))
	}
	if err := o.validate(); err != nil {
		errs = append(errs, err)
	}
	if o.classifier == nil || o.clock == nil {
		errs = append(errs, errors.New("lb: nil classifier or clock"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	b := &Balancer{
		service:      service,
		w:            w,
		opts:         o,
		tau:          float64(o.decay),
		ejection:     o.outlier.enabled(),
		latencyEject: o.outlier.enabled() && o.outlier.latency(),
		epoch:        o.clock(),
		ready:        make(chan struct{}),
		endpoints:    map[string]*Endpoint{},
	}
	b.nextReadmit.Store(math.MaxInt64)
	b.table.Store(&Table{b: b, err: &NoInstancesError{Service: service, Reason: "no snapshot yet"}})
	m, err := newInstruments(b)
	if err != nil {
		return nil, err
	}
	b.m = m
	return b, nil
}

// Service returns the name of the service the balancer serves.
func (b *Balancer) Service() string { return b.service }

// Ready returns a channel closed once the first snapshot has been applied.
func (b *Balancer) Ready() <-chan struct{} { return b.ready }

// Run follows the watcher until ctx is done or Close is called, applying every snapshot. It returns
// nil after a stop, ErrClosed if the balancer was closed before, and the watcher's error (wrapped) if
// the watcher fails for good. Use either Run or Start.
func (b *Balancer) Run(ctx context.Context) error {
	ctx, stopped, err := b.begin(ctx)
	if err != nil {
		return err
	}
	defer close(stopped)
	return b.loop(ctx)
}

// Start runs the balancer in a goroutine it owns until Close, which waits for it and returns its
// error. Use either Run or Start.
func (b *Balancer) Start() error {
	ctx, stopped, err := b.begin(context.Background())
	if err != nil {
		return err
	}
	go func() {
		defer close(stopped)
		err := b.loop(ctx)
		b.mu.Lock()
		b.runErr = err
		b.mu.Unlock()
	}()
	return nil
}

// Close stops Run or Start and waits for them to return, then releases the metric callbacks. Picks
// keep working on the last table. It is idempotent and returns the error the Start goroutine ended
// with, if any.
func (b *Balancer) Close() error {
	b.mu.Lock()
	first := !b.closed
	b.closed = true
	cancel, stopped := b.cancel, b.stopped
	b.mu.Unlock()
	if cancel != nil {
		cancel()
		<-stopped
	}
	if first {
		b.m.unregister()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.runErr
}

func (b *Balancer) begin(ctx context.Context) (context.Context, chan struct{}, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return nil, nil, ErrClosed
	case b.running:
		return nil, nil, errors.New("lb: balancer already running")
	}
	b.running = true
	ctx, b.cancel = context.WithCancel(ctx)
	b.stopped = make(chan struct{})
	return ctx, b.stopped, nil
}

func (b *Balancer) loop(ctx context.Context) error {
	if b.w == nil {
		<-ctx.Done()
		return nil
	}
	var after uint64
	for {
		snap, err := b.w.Next(ctx, after)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("lb: watch %q: %w", b.service, err)
		}
		after = snap.Version
		b.update(snap.Instances)
	}
}

// update replaces the instance set, keeping the state of instances that stay at the same address.
func (b *Balancer) update(instances []discovery.Instance) {
	b.mu.Lock()
	defer b.mu.Unlock()
	next := make(map[string]*Endpoint, len(instances))
	order := make([]*Endpoint, 0, len(instances))
	for _, inst := range instances {
		key := inst.ID
		if key == "" {
			key = inst.HostPort()
		}
		if _, dup := next[key]; dup {
			continue
		}
		e := b.endpoints[key]
		if e != nil && e.hostPort == inst.HostPort() {
			e.inst.Store(&inst)
		} else {
			e = newEndpoint(b, inst, key)
		}
		next[key] = e
		order = append(order, e)
	}
	for key, e := range b.endpoints {
		if next[key] != e {
			e.removed = true
			if e.ejected {
				b.ejected--
			}
		}
	}
	b.endpoints, b.order = next, order
	b.readmitLocked(b.nanos())
	b.rebuildLocked()
	if !b.readyOnce {
		b.readyOnce = true
		close(b.ready)
	}
}

// Pick chooses an instance for one call with the balancer's policy. It never blocks and does not
// allocate. The caller must end the call with Done or Release on the returned Endpoint. When there is
// no instance to use, the error is a *NoInstancesError matching ErrNoInstances. For RingHash, ctx
// carries the key (WithHashKey).
func (b *Balancer) Pick(ctx context.Context) (*Endpoint, error) {
	e, err := b.pick(ctx, nil)
	if err != nil {
		b.m.noInstances(ctx)
	}
	return e, err
}

// pick is Pick for one attempt of a call that used the instances in tried, without counting a
// failure, for callers that may still succeed (Transport waiting for the first snapshot) and count
// only the final outcome.
func (b *Balancer) pick(ctx context.Context, tried *discovery.Tried) (*Endpoint, error) {
	t := b.table.Load()
	if len(t.Endpoints) == 0 {
		return nil, t.err
	}
	if tried != nil && tried.Len() == 0 {
		tried = nil
	}
	e := t.picker.Pick(ctx, tried)
	if e == nil {
		return nil, t.errUnavailable
	}
	e.inflight.Add(1)
	if b.opts.perInstance {
		e.picks.Add(1)
	}
	return e, nil
}

func (b *Balancer) rand64() uint64 {
	if b.opts.src == nil {
		return rand.Uint64() // per-thread runtime generator: no lock
	}
	b.rng.Lock()
	defer b.rng.Unlock()
	return b.opts.src.Uint64()
}

// bounded maps a uniform 32-bit value onto [0, n) (Lemire's multiply-shift; the bias is below 2^-16
// for any realistic n).
func bounded(x uint32, n int) int { return int((uint64(x) * uint64(n)) >> 32) }

func bounded64(x, n uint64) uint64 { hi, _ := bits.Mul64(x, n); return hi }

// nanos is the balancer's clock: nanoseconds since it was created, monotonic when the clock is.
// With the real clock it reads only the monotonic clock (time.Since): time.Now reads the wall clock
// too, at about twice the cost, and nanos runs twice per call.
func (b *Balancer) nanos() int64 {
	if !b.opts.ownClock {
		return int64(time.Since(b.epoch))
	}
	return int64(b.opts.clock().Sub(b.epoch))
}

// advance moves P2C's coarse clock and re-admits ejected instances whose time is up. It runs when
// calls finish, so picks never read the clock and re-admission needs no timer: while there is
// traffic there are completions, and without traffic nobody needs the instance back.
func (b *Balancer) advance(now int64) {
	if now-b.coarse.Load() >= int64(time.Millisecond) {
		b.coarse.Store(now)
	}
	if now >= b.nextReadmit.Load() {
		b.mu.Lock()
		if b.readmitLocked(now) {
			b.rebuildLocked()
		}
		b.mu.Unlock()
	}
	if b.latencyEject {
		if last := b.latencyStamp.Load(); now-last >= int64(latencyRefresh) && b.latencyStamp.CompareAndSwap(last, now) {
			b.refreshSlow()
		}
	}
}

// refreshSlow recomputes the latency above which a call is slow: LatencyFactor times the median
// estimate of the healthy instances that have one, at least LatencyMin; 0 (no call is slow) with
// fewer than latencyMinInstances estimates.
func (b *Balancer) refreshSlow() {
	cfg := &b.opts.outlier
	b.mu.Lock()
	defer b.mu.Unlock()
	lat := b.latBuf[:0]
	for _, e := range b.order {
		if v := math.Float64frombits(e.ewma.Load()); !e.ejected && v > 0 {
			lat = append(lat, v)
		}
	}
	b.latBuf = lat
	if len(lat) < latencyMinInstances {
		b.slowNanos.Store(0)
		return
	}
	slices.Sort(lat)
	median := lat[(len(lat)-1)/2] // the lower median: a slow half does not make itself the norm
	b.slowNanos.Store(math.Float64bits(max(cfg.LatencyFactor*median, float64(cfg.LatencyMin))))
}

// slow reports whether a call that took latency ns counts towards latency ejection.
func (b *Balancer) slow(latency int64) bool {
	limit := math.Float64frombits(b.slowNanos.Load())
	return limit > 0 && float64(latency) > limit
}

func (b *Balancer) readmitLocked(now int64) (changed bool) {
	next := int64(math.MaxInt64)
	for _, e := range b.order {
		if !e.ejected {
			continue
		}
		if e.ejectedUntil <= now {
			e.ejected = false
			e.healthySince = now
			b.ejected--
			e.resetCounters(now)
			changed = true
			continue
		}
		next = min(next, e.ejectedUntil)
	}
	b.nextReadmit.Store(next)
	return changed
}

func (e *Endpoint) resetCounters(now int64) {
	e.mu.Lock()
	e.consecutive, e.winStart, e.winReqs, e.winFails, e.slowRun = 0, now, 0, 0, 0
	e.mu.Unlock()
}

// eject takes e out of the pick set if the maximum ejection share allows it, and reports whether
// it did.
func (b *Balancer) eject(e *Endpoint, now int64, reason string) bool {
	cfg := &b.opts.outlier
	b.mu.Lock()
	defer b.mu.Unlock()
	if e.removed || e.ejected {
		return false
	}
	if limit := max(len(b.order)*cfg.MaxEjectionPercent/100, 1); b.ejected >= limit {
		return false
	}
	if cfg.Interval > 0 && e.ejections > 0 { // forgive one past ejection per healthy interval
		e.ejections = max(e.ejections-int((now-e.healthySince)/int64(cfg.Interval)), 0)
	}
	e.ejections++
	d := cfg.BaseEjectionTime * time.Duration(e.ejections)
	if cfg.MaxEjectionTime > 0 {
		d = min(d, cfg.MaxEjectionTime)
	}
	e.ejected = true
	e.ejectedUntil = now + int64(d)
	b.ejected++
	e.resetCounters(now)
	if e.ejectedUntil < b.nextReadmit.Load() {
		b.nextReadmit.Store(e.ejectedUntil)
	}
	b.rebuildLocked()
	b.m.ejection(reason)
	return true
}

// rebuildLocked publishes a new table from the instance set and the ejection state.
func (b *Balancer) rebuildLocked() {
	healthy := make([]*Endpoint, 0, len(b.order)-b.ejected)
	for _, e := range b.order {
		if !e.ejected {
			healthy = append(healthy, e)
		}
	}
	active, panicking := healthy, false
	if p := b.opts.outlier.PanicPercent; len(b.order) > 0 && p > 0 && len(healthy)*100 < p*len(b.order) {
		active, panicking = b.order, true
	}
	if panicking && !b.panicking {
		b.m.panicEntered()
	}
	b.panicking = panicking
	b.table.Store(b.buildTable(active, len(b.order)))
}
