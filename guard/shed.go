package guard

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/bits"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/cloudchassis/kit/internal/obs"
	"github.com/cloudchassis/kit/problem"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Priority orders requests for shedding. The zero value is PriorityDefault.
type Priority uint8

const (
	// PriorityDefault requests are admitted up to the adaptive limit and may queue briefly.
	PriorityDefault Priority = iota
	// PrioritySheddable requests (batch jobs, prefetches) are refused first: once in-flight requests
	// reach SheddableShare of the limit. They never queue.
	PrioritySheddable
	// PriorityCritical requests (health checks, control traffic) are never shed. They still count
	// as in flight, so they are seen by the limit.
	PriorityCritical
)

// String returns the metric attribute value: "default", "sheddable" or "critical".
func (p Priority) String() string {
	switch p {
	case PrioritySheddable:
		return semconv.PrioritySheddable
	case PriorityCritical:
		return semconv.PriorityCritical
	default:
		return semconv.PriorityDefault
	}
}

// ParsePriority reads "critical", "default" or "sheddable" (case-insensitive; "low" and "high" are
// accepted as sheddable and critical).
func ParsePriority(s string) (Priority, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "default", "normal", "":
		return PriorityDefault, true
	case "sheddable", "low":
		return PrioritySheddable, true
	case "critical", "high":
		return PriorityCritical, true
	}
	return PriorityDefault, false
}

// Shedder is an adaptive concurrency limit for a server: it admits requests while the number in
// flight is below a limit, and moves the limit with measured latency (a gradient controller in the
// style of Netflix's Gradient2): when the average latency of a sample window exceeds Tolerance
// times the long-term baseline the limit shrinks in proportion, otherwise it grows by about the
// square root of itself. So the server keeps only as much work in flight as it completes at
// near-baseline latency, and refuses the rest at once with 503 instead of letting queues grow.
//
// The fast path (admit and complete) is two atomic adds and two clock reads; the limit is
// recomputed at most once per sample window by whichever request completes it, never by a
// background goroutine. A Shedder is safe for concurrent use.
type Shedder struct {
	inflight atomic.Int64
	limit    atomic.Int64
	queued   atomic.Int64

	// Current sample window, written by every completing request.
	sumRTT      atomic.Int64
	samples     atomic.Int64
	maxInflight atomic.Int64
	windowEnd   atomic.Int64

	// Until the first baseline is measured (cold), completions are also grouped by the number in
	// flight when they were admitted, so that the baseline comes from the least loaded of them.
	cold      atomic.Bool
	started   atomic.Bool // the first request was admitted; the first window starts then
	coldSum   [coldBuckets]atomic.Int64
	coldCount [coldBuckets]atomic.Int64

	cfg   ShedConfig
	clock func() int64 // nanoseconds since construction

	mu        sync.Mutex // held by the one request that recomputes the limit
	estimate  float64
	baseline  float64 // long-term average latency, ns
	slowStart bool    // doubling the limit until latency first exceeds tolerance
	over      int     // consecutive windows over tolerance during slow start
	winStart  int64   // when the current window began (the first admission, then the last update)

	qmu     sync.Mutex
	waiters []*waiter

	route      func(*http.Request) string
	priorityFn func(*http.Request) Priority
	routePrio  map[string]Priority
	header     string

	logger   *slog.Logger
	shed     metric.Int64Counter
	reg      metric.Registration
	problems func(w http.ResponseWriter, r *http.Request, status int, detail string)
}

type waiter struct{ ready chan struct{} }

// Reasons a request was shed, in logs.
const (
	reasonLimit        = "concurrency_limit"
	reasonSheddable    = "sheddable_share"
	reasonQueueTimeout = "queue_timeout"
	reasonQueueFull    = "queue_full"
	reasonCanceled     = "canceled_while_queued"
)

// NewShedder returns a Shedder configured by cfg; zero fields take the defaults of
// DefaultShedConfig. cfg.Enabled is not consulted (see ShedConfig.NewShedder).
func NewShedder(cfg ShedConfig, opts ...Option) (*Shedder, error) {
	cfg = cfg.withDefaults()
	o := newOptions(opts)
	s := &Shedder{
		cfg:        cfg,
		clock:      o.monotonic(o.now()),
		estimate:   float64(cfg.InitialLimit),
		slowStart:  true,
		route:      o.route,
		priorityFn: o.priority,
		header:     http.CanonicalHeaderKey(cfg.PriorityHeader),
		logger:     o.Logger,
		problems:   o.problems,
	}
	s.limit.Store(int64(cfg.InitialLimit))
	s.windowEnd.Store(int64(cfg.Window))
	s.cold.Store(true)
	if len(o.routePriorities) > 0 || len(cfg.CriticalRoutes) > 0 || len(cfg.SheddableRoutes) > 0 {
		s.routePrio = make(map[string]Priority)
		for _, r := range cfg.SheddableRoutes {
			s.routePrio[r] = PrioritySheddable
		}
		for _, r := range cfg.CriticalRoutes {
			s.routePrio[r] = PriorityCritical
		}
		for r, p := range o.routePriorities {
			s.routePrio[r] = p
		}
	}
	in := obs.NewInstruments(o.Meters, semconv.ScopeGuard)
	s.shed = in.Counter(semconv.MetricServerShed, semconv.UnitRequest, "Requests refused by the adaptive load shedder.")
	gauge := in.ObservableGauge(semconv.MetricServerConcurrencyLimit, semconv.UnitRequest,
		"Current adaptive concurrency limit of the server.")
	s.reg = in.Register(func(_ context.Context, ob metric.Observer) error {
		ob.ObserveInt64(gauge, s.limit.Load())
		return nil
	}, gauge)
	if err := in.Err(); err != nil {
		return nil, fmt.Errorf("guard: shedder metrics: %w", err)
	}
	return s, nil
}

// WithPriorityFunc sets a function that decides a request's priority before the route table and
// the priority header are consulted. Returning PriorityDefault defers to them.
func WithPriorityFunc(f func(*http.Request) Priority) Option {
	return optionFunc(func(o *options) { o.priority = f })
}

// WithRoutePriorities sets priorities by route template ("GET /orders/{id}"), on top of
// ShedConfig's CriticalRoutes and SheddableRoutes. The route is found with WithRouteFunc.
func WithRoutePriorities(m map[string]Priority) Option {
	return optionFunc(func(o *options) {
		o.routePriorities = make(map[string]Priority, len(m))
		for k, v := range m {
			o.routePriorities[k] = v
		}
	})
}

// Limit returns the current concurrency limit.
func (s *Shedder) Limit() int { return int(s.limit.Load()) }

// Inflight returns the number of admitted requests not yet completed.
func (s *Shedder) Inflight() int { return int(s.inflight.Load()) }

// Close stops reporting the limit gauge. The Shedder keeps working; Close only matters when the
// meter provider outlives it.
func (s *Shedder) Close() error {
	if s != nil && s.reg != nil {
		return s.reg.Unregister()
	}
	return nil
}

// Ticket is an admitted request. Call Done exactly once when it completes.
type Ticket struct {
	s     *Shedder
	start int64
	at    int64 // requests in flight when admitted, this one included
}

// Done records the request's latency and frees its slot.
func (t Ticket) Done() {
	if t.s != nil {
		t.s.release(t.start, t.at)
	}
}

// Discard frees the slot without recording a latency: for work admitted through the shedder whose
// duration says nothing about the server's load, such as a gRPC stream that lives as long as its
// caller wants. A zero ticket's Discard does nothing.
func (t Ticket) Discard() {
	if t.s != nil {
		t.s.free()
	}
}

// DoneExcluding is Done for a request that spent waited of its time blocked on the client (reading
// a streamed body): that time is the client's, not the server's, and is left out of the latency
// sample.
func (t Ticket) DoneExcluding(waited time.Duration) {
	if t.s != nil {
		t.s.release(t.start+int64(max(0, waited)), t.at)
	}
}

// Acquire admits a request of priority p, waiting up to QueueTimeout for a slot when p is
// PriorityDefault and the limit is reached. It reports false, with the reason, when the request
// must be refused.
func (s *Shedder) Acquire(ctx context.Context, p Priority) (Ticket, bool) {
	t, _, ok := s.acquire(ctx, p)
	return t, ok
}

// TryAcquire is Acquire without waiting.
func (s *Shedder) TryAcquire(p Priority) (Ticket, bool) {
	n, ok := s.tryAcquire(p)
	if !ok {
		return Ticket{}, false
	}
	return s.ticket(n), true
}

func (s *Shedder) nanotime() int64 { return s.clock() }

// ticket starts timing an admitted request; n is the number in flight with it.
func (s *Shedder) ticket(n int64) Ticket {
	now := s.nanotime()
	if !s.started.Load() && s.started.CompareAndSwap(false, true) {
		// The first window starts with the first request, not at construction: a service may be
		// built long before traffic arrives, and the first window's throughput must not count that.
		s.mu.Lock()
		s.winStart = now
		s.windowEnd.Store(now + int64(s.cfg.Window))
		s.mu.Unlock()
	}
	return Ticket{s: s, start: now, at: n}
}

func (s *Shedder) acquire(ctx context.Context, p Priority) (Ticket, string, bool) {
	if n, ok := s.tryAcquire(p); ok {
		return s.ticket(n), "", true
	}
	if p == PrioritySheddable {
		return Ticket{}, reasonSheddable, false
	}
	if s.cfg.QueueTimeout <= 0 {
		return Ticket{}, reasonLimit, false
	}
	if reason, ok := s.wait(ctx); !ok {
		return Ticket{}, reason, false
	}
	return s.ticket(s.inflight.Load()), "", true
}

func (s *Shedder) tryAcquire(p Priority) (int64, bool) {
	limit := s.limit.Load()
	switch p {
	case PriorityCritical:
		limit = math.MaxInt64
	case PrioritySheddable:
		limit = max(1, int64(float64(limit)*s.cfg.SheddableShare))
	}
	n := s.inflight.Add(1)
	if n > limit {
		s.inflight.Add(-1)
		return n, false
	}
	for {
		m := s.maxInflight.Load()
		if n <= m || s.maxInflight.CompareAndSwap(m, n) {
			return n, true
		}
	}
}

// wait queues the caller for up to QueueTimeout. A releasing request hands its slot over (wake),
// so a waiter that is woken already holds a slot.
func (s *Shedder) wait(ctx context.Context) (string, bool) {
	w := &waiter{ready: make(chan struct{}, 1)}
	s.qmu.Lock()
	queueMax := s.cfg.QueueSize
	if queueMax <= 0 {
		queueMax = int(s.limit.Load())
	}
	if len(s.waiters) >= queueMax {
		s.qmu.Unlock()
		return reasonQueueFull, false
	}
	s.waiters = append(s.waiters, w)
	s.queued.Add(1)
	// A request that completed after our first try but before queued was raised did not see us;
	// trying once more here closes that gap (release decrements inflight before reading queued).
	if _, ok := s.tryAcquire(PriorityDefault); ok {
		s.removeLocked(w)
		s.qmu.Unlock()
		return "", true
	}
	s.qmu.Unlock()

	timer := time.NewTimer(s.cfg.QueueTimeout)
	defer timer.Stop()
	reason := reasonQueueTimeout
	select {
	case <-w.ready:
		return "", true
	case <-timer.C:
	case <-ctx.Done():
		reason = reasonCanceled
	}
	s.qmu.Lock()
	removed := s.removeLocked(w)
	s.qmu.Unlock()
	if !removed {
		// Woken at the same moment: the slot is ours; give it back properly.
		<-w.ready
		s.free()
	}
	return reason, false
}

func (s *Shedder) removeLocked(w *waiter) bool {
	for i, x := range s.waiters {
		if x == w {
			copy(s.waiters[i:], s.waiters[i+1:])
			s.waiters[len(s.waiters)-1] = nil
			s.waiters = s.waiters[:len(s.waiters)-1]
			s.queued.Add(-1)
			return true
		}
	}
	return false
}

func (s *Shedder) release(start, at int64) {
	now := s.nanotime()
	rtt := max(0, now-start)
	s.sumRTT.Add(rtt)
	if s.cold.Load() {
		b := min(coldBuckets-1, bits.Len64(uint64(max(1, at)))-1)
		s.coldSum[b].Add(rtt)
		s.coldCount[b].Add(1)
	}
	n := s.samples.Add(1)
	if now >= s.windowEnd.Load() && n >= int64(s.cfg.MinSamples) && s.mu.TryLock() {
		s.update(now)
		s.mu.Unlock()
	}
	s.free()
}

// free gives a slot back without recording a latency sample.
func (s *Shedder) free() {
	s.inflight.Add(-1)
	if s.queued.Load() > 0 {
		s.wake()
	}
}

// wake hands free slots to waiters, oldest first.
func (s *Shedder) wake() {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	for len(s.waiters) > 0 {
		if _, ok := s.tryAcquire(PriorityDefault); !ok {
			return
		}
		w := s.waiters[0]
		copy(s.waiters, s.waiters[1:])
		s.waiters[len(s.waiters)-1] = nil
		s.waiters = s.waiters[:len(s.waiters)-1]
		s.queued.Add(-1)
		w.ready <- struct{}{}
	}
}

// update closes the sample window and moves the limit. Called with s.mu held.
func (s *Shedder) update(now int64) {
	if now < s.windowEnd.Load() {
		return
	}
	sum, n := s.sumRTT.Swap(0), s.samples.Swap(0)
	peak := s.maxInflight.Swap(s.inflight.Load())
	began := s.winStart
	s.winStart = now
	s.windowEnd.Store(now + int64(s.cfg.Window))
	least, leastOK := s.coldBaseline()
	if n <= 0 || sum <= 0 {
		return
	}
	short := float64(sum) / float64(n)
	limit := s.estimate
	saturated := float64(peak) >= limit*saturation

	// The baseline follows improvements quickly and rises slowly, and fast only while the server is
	// not saturated: latency that grows while we are at the limit is our own queueing, and letting
	// the baseline absorb it would let the limit drift upwards under sustained overload (the known
	// weakness of a plain long-term average). The slow unconditional rise still re-baselines a
	// service whose work genuinely became slower, within about a hundred windows.
	switch {
	case s.baseline == 0:
		// The first window: the initial limit may have let a queue in, so the baseline is the
		// latency of the requests admitted with the fewest others in flight, when that is lower
		// than the window's average (a service whose latency does not grow with concurrency gets
		// the average, as before).
		s.baseline = short
		if leastOK && least < short {
			s.baseline = least
		}
	case short < s.baseline:
		s.baseline += (short - s.baseline) * baselineFall
	case !saturated:
		s.baseline += (short - s.baseline) * baselineRise
	default:
		s.baseline += (short - s.baseline) * baselineCreep
	}

	gradient := max(0.5, min(1.0, s.cfg.Tolerance*s.baseline/short))
	if s.slowStart {
		// Like TCP's slow start: the limit doubles per window while latency stays within tolerance
		// and the limit is what holds the server back. Slow start ends after coldConfirm
		// consecutive windows over tolerance with a queue (peak in flight at least coldQueue of the
		// limit; one slow window, such as a fresh instance opening its
		// connection pools, is not overload), and then the limit drops at once to what the server
		// was measured to complete at baseline latency (Little's law: tolerance × throughput ×
		// baseline), not by a few percent per window: the initial limit is generous so that a new
		// instance does not refuse the traffic it takes over, and under real overload the queue it
		// let in must go quickly.
		switch {
		case gradient < 1 && float64(peak) < limit*coldQueue:
			// Slower, but without a queue that admission let in (a busy machine, a slow dependency
			// at light load): cutting the limit cannot help, and Little's law at this window's
			// throughput would set it far below the next spike.
			s.over = 0
			return
		case gradient < 1 && now-began > 2*int64(s.cfg.Window):
			// The window spans an idle spell (windows close when a request completes): its
			// throughput is meaningless, and the slow window before the gap is not "consecutive".
			s.over = 0
			return
		case gradient < 1:
			s.over++
			if s.over < coldConfirm {
				return
			}
			s.slowStart = false
			if d := now - began; d > 0 {
				s.setEstimate(min(limit, s.cfg.Tolerance*float64(n)/float64(d)*s.baseline))
				return
			}
		case saturated:
			s.over = 0
			s.setEstimate(limit * 2)
			return
		default:
			s.over = 0
			return
		}
	}
	next := limit * gradient
	if gradient >= 1 && saturated {
		// Probe upwards by about sqrt(limit) only when latency is within tolerance and the limit is
		// what holds the server back: an application-limited server would otherwise raise its limit
		// without ever testing it. (Gradient2 adds the probe on every window; at equilibrium that
		// holds latency near tolerance/(1-1/sqrt(limit)) times the baseline instead of tolerance.)
		next += math.Sqrt(limit)
	}
	s.setEstimate(limit*(1-s.cfg.Smoothing) + next*s.cfg.Smoothing)
}

// setEstimate clamps est to [MinLimit, MaxLimit] and publishes it. Called with s.mu held.
func (s *Shedder) setEstimate(est float64) {
	est = max(float64(s.cfg.MinLimit), min(float64(s.cfg.MaxLimit), est))
	s.estimate = est
	s.limit.Store(int64(math.Round(est)))
}

// coldBaseline returns, once, the average latency of the least loaded completions of the first
// window: the lowest concurrency buckets, merged upwards until they hold coldMinSamples. It turns
// the grouping off. Called with s.mu held.
func (s *Shedder) coldBaseline() (float64, bool) {
	if !s.cold.Load() {
		return 0, false
	}
	s.cold.Store(false)
	var sum, n int64
	for i := range s.coldSum {
		sum += s.coldSum[i].Load()
		n += s.coldCount[i].Load()
		if n >= coldMinSamples {
			break
		}
	}
	if n == 0 || sum <= 0 {
		return 0, false
	}
	return float64(sum) / float64(n), true
}

const (
	coldBuckets    = 8 // admitted with 1, 2-3, 4-7, ... 64-127, 128 or more in flight
	coldMinSamples = 5 // completions the cold baseline averages, at least
	coldConfirm    = 2 // consecutive windows over tolerance that end slow start
	// coldQueue is the peak in-flight share of the limit from which slow latency in slow start counts
	// as the server's own queue (overload) rather than noise at light load.
	coldQueue = 0.5

	saturation    = 0.9  // peak in-flight share of the limit that counts as "at the limit"
	baselineFall  = 0.5  // per window, when latency improves
	baselineRise  = 0.05 // per window, when latency grows while not saturated
	baselineCreep = 0.002
)

// Middleware refuses requests beyond the adaptive limit with 503 Service Unavailable and
// Retry-After, as application/problem+json. Every refusal is counted (chassis.server.shed, with
// http.route and chassis.priority) and logged with its reason at Warn level.
//
// A nil *Shedder returns next unchanged.
func (s *Shedder) Middleware(next http.Handler) http.Handler {
	if s == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := s.priorityOf(r)
		t, reason, ok := s.acquire(r.Context(), p)
		if !ok {
			s.refuse(w, r, p, reason)
			return
		}
		body := r.Body
		defer s.complete(t, body)
		next.ServeHTTP(w, r)
	})
}

// complete ends a request's ticket, leaving out of its latency the time its handler was blocked on
// the client's body (when a BodyGate streams it).
func (s *Shedder) complete(t Ticket, body io.ReadCloser) {
	if b, ok := body.(*streamedBody); ok {
		t.DoneExcluding(b.clientWait())
		return
	}
	t.Done()
}

// priorityOf decides a request's priority: WithPriorityFunc, then the route table, then the
// priority header. The header can only lower a request's priority (to sheddable): a client that
// could name itself critical would exempt itself from shedding.
func (s *Shedder) priorityOf(r *http.Request) Priority {
	if s.priorityFn != nil {
		if p := s.priorityFn(r); p != PriorityDefault {
			return p
		}
	}
	if s.routePrio != nil {
		if p, ok := s.routePrio[s.route(r)]; ok {
			return p
		}
	}
	if s.header != "" {
		if v := r.Header[s.header]; len(v) > 0 {
			if p, ok := ParsePriority(v[0]); ok && p == PrioritySheddable {
				return p
			}
		}
	}
	return PriorityDefault
}

// AcquireRPC is Acquire for servers other than net/http (the gRPC server of package grpcx): a
// refusal is counted (chassis.server.shed with rpc.method set to method, the full method name),
// traced and logged as the Middleware's, and retry is how long the caller should wait (SHED_RETRY_AFTER,
// whole seconds).
func (s *Shedder) AcquireRPC(ctx context.Context, p Priority, method string) (t Ticket, retry time.Duration, ok bool) {
	t, reason, ok := s.acquire(ctx, p)
	if ok {
		return t, 0, true
	}
	_, _, r := s.record(ctx, p, reason, semconv.AttrRPCMethod, method)
	return Ticket{}, time.Duration(r) * time.Second, false
}

// record counts, traces and logs a refusal; route is the value of the attribute named key.
func (s *Shedder) record(ctx context.Context, p Priority, reason, key, route string) (limit, inflight, retry int64) {
	attrs := []attribute.KeyValue{attribute.String(semconv.AttrPriority, p.String())}
	if route != "" {
		attrs = append(attrs, attribute.String(key, route))
	}
	s.shed.Add(ctx, 1, metric.WithAttributes(attrs...))
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(semconv.EventShed, trace.WithAttributes(attrs[0]))
	}
	limit, inflight = s.limit.Load(), s.inflight.Load()
	if s.logger.Enabled(ctx, slog.LevelWarn) {
		s.logger.LogAttrs(ctx, slog.LevelWarn, "request shed",
			slog.String("reason", reason),
			slog.String("route", route),
			slog.String("priority", p.String()),
			slog.Int64("limit", limit),
			slog.Int64("inflight", inflight))
	}
	return limit, inflight, max(1, int64(math.Ceil(s.cfg.RetryAfter.Seconds())))
}

func (s *Shedder) refuse(w http.ResponseWriter, r *http.Request, p Priority, reason string) {
	limit, inflight, retry := s.record(r.Context(), p, reason, semconv.AttrHTTPRoute, s.route(r))
	w.Header().Set("Retry-After", strconv.FormatInt(retry, 10))
	detail := "server overloaded (" + reason + ": " + strconv.FormatInt(inflight, 10) + " in flight, limit " +
		strconv.FormatInt(limit, 10) + "); retry in " + strconv.FormatInt(retry, 10) + " s"
	if s.problems != nil {
		s.problems(w, r, http.StatusServiceUnavailable, detail)
		return
	}
	problem.Write(w, http.StatusServiceUnavailable, "", detail)
}
