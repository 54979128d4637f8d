package lb

import (
	"context"
	"errors"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// penalty is the cost of an instance that has no latency sample yet but already has a call in
// flight (Finagle's Penalty): it is avoided until its first answer arrives, while an idle new
// instance costs 0 and so gets exactly one probe. It is also the cap of a latency estimate.
const penalty = float64(math.MaxInt64 >> 16)

// failurePenalty multiplies the latency estimate on a failed or overloaded call: failures are often
// fast (connection refused, 503 at once) and must not make an instance look attractive.
const failurePenalty = 2

// Endpoint is one instance as seen by a Balancer: the handle Pick returns and the place where the
// instance's load, latency estimate and ejection state live. The same *Endpoint is returned by every
// pick of the instance while it stays in the snapshots, so it carries no per-call state.
//
// Every successful Pick must be matched by exactly one Done or Release. All methods are safe for
// concurrent use.
type Endpoint struct {
	b        *Balancer
	key      string // ID, or host:port when the instance has no ID
	hostPort string
	rt       http.RoundTripper
	avail    func() bool // Available of the per-instance transport, when it is a discovery.InstanceTransport
	inst     atomic.Pointer[discovery.Instance]
	attrs    []metric.ObserveOption // per-instance metric attributes

	// Written by every pick and done: kept together so they share one cache line.
	inflight atomic.Int64
	picks    atomic.Uint64
	ewma     atomic.Uint64 // float64 bits: peak-EWMA latency in nanoseconds, 0 = no sample yet
	stamp    atomic.Int64  // clock (ns since the balancer's epoch) of the last sample

	mu          sync.Mutex // guards the failure counters below
	consecutive int
	winStart    int64
	winReqs     int
	winFails    int
	slowRun     int // slow calls in a row (latency ejection)

	// Guarded by Balancer.mu.
	ejected      bool
	ejections    int
	ejectedUntil int64
	healthySince int64
	removed      bool
}

func newEndpoint(b *Balancer, inst discovery.Instance, key string) *Endpoint {
	e := &Endpoint{b: b, key: key, hostPort: inst.HostPort()}
	e.inst.Store(&inst)
	e.rt = b.opts.base
	if e.rt == nil {
		e.rt = http.DefaultTransport
	}
	if b.opts.wrap != nil {
		e.rt = b.opts.wrap(inst, e.rt)
	}
	if a, ok := e.rt.(discovery.InstanceTransport); ok {
		e.avail = a.Available
	}
	if b.opts.perInstance {
		e.attrs = []metric.ObserveOption{metric.WithAttributeSet(attribute.NewSet(
			attribute.String(semconv.AttrPeerService, b.service),
			attribute.String(attrInstanceID, key)))}
	}
	return e
}

// Instance returns the instance this endpoint stands for, as of the latest snapshot.
func (e *Endpoint) Instance() discovery.Instance { return *e.inst.Load() }

// Done ends one call started by Pick: it releases the in-flight slot and feeds the latency and the
// outcome to the latency estimate and to outlier ejection. err nil is a success; otherwise the
// classifier (WithClassifier, default discovery.Classify) decides with a nil response, and an error it
// does not call a failure records nothing. context.Canceled (the call was cut short: a hedge won, the
// caller gave up) only raises the latency estimate when latency is above it, since the instance
// took at least that long; it never counts towards ejection.
func (e *Endpoint) Done(latency time.Duration, err error) {
	o := success
	if err != nil {
		o = ignored
		switch c := e.b.opts.classifier(nil, err); {
		case errors.Is(err, context.Canceled):
			o = cancelled
		case c.Failure && !c.Local:
			o = failure
		}
	}
	_ = e.finish(e.b.nanos(), int64(latency), o) // no span to report an ejection on: see Transport
	e.Release()
}

// raise records a lower bound of the instance's latency: the estimate rises to rtt if below it.
func (e *Endpoint) raise(now int64, rtt float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if rtt > math.Float64frombits(e.ewma.Load()) {
		e.ewma.Store(math.Float64bits(rtt))
		e.stamp.Store(now)
	}
}

// Release ends one call started by Pick without recording anything about it: use it when the call
// was not made, or to end a call whose outcome was already reported.
func (e *Endpoint) Release() { e.inflight.Add(-1) }

// Available reports whether the endpoint may be picked now: its per-instance transport
// (discovery.InstanceTransport) and WithAvailability both allow it.
func (e *Endpoint) Available() bool {
	if e.avail != nil && !e.avail() {
		return false
	}
	if f := e.b.opts.availability; f != nil && !f(e.key) {
		return false
	}
	return true
}

// cost is P2C's load estimate: the peak-EWMA latency, decayed towards zero for the time since the
// last sample (so an instance avoided for being slow is probed again), times the calls in flight
// plus one.
func (e *Endpoint) cost(now int64, tau float64) float64 {
	inflight := float64(e.inflight.Load())
	lat := math.Float64frombits(e.ewma.Load())
	if lat == 0 {
		if inflight == 0 {
			return 0
		}
		return penalty + inflight
	}
	if td := now - e.stamp.Load(); td > 0 {
		lat *= decay(float64(td) / tau)
	}
	return lat * (inflight + 1)
}

// decay returns exp(-x) for x >= 0. With traffic the time since the last sample is a tiny fraction of
// the decay constant, and a cubic series is exact to 1e-8 there at a fraction of math.Exp's cost on
// the pick path.
func decay(x float64) float64 {
	if x < 0.01 {
		return 1 - x + x*x/2 - x*x*x/6
	}
	return math.Exp(-x)
}

// finish records the outcome of one call that ended at now (clock nanoseconds) and took latency ns.
// It returns the reason when the call got the instance ejected, else "".
func (e *Endpoint) finish(now, latency int64, o outcome) (ejected string) {
	b := e.b
	b.advance(now)
	if o == ignored {
		return ""
	}
	if o == cancelled {
		e.raise(now, min(float64(max(latency, 0)), penalty))
		if b.latencyEject && b.slow(latency) { // it took at least this long
			e.mu.Lock()
			e.slowRun++
			run := e.slowRun
			e.mu.Unlock()
			if run >= b.opts.outlier.ConsecutiveSlow && b.eject(e, now, semconv.ReasonLatency) {
				return semconv.ReasonLatency
			}
		}
		return ""
	}
	rtt := float64(max(latency, 0))
	cfg := &b.opts.outlier
	var reason string

	e.mu.Lock()
	old := math.Float64frombits(e.ewma.Load())
	if o == failure || o == slow {
		rtt = max(rtt, old*failurePenalty)
	}
	rtt = min(rtt, penalty)
	next := rtt
	if rtt < old { // peak sensitive: rises at once, decays with time
		w := decay(float64(max(now-e.stamp.Load(), 0)) / b.tau)
		next = old*w + rtt*(1-w)
	}
	e.ewma.Store(math.Float64bits(next))
	e.stamp.Store(now)

	if b.ejection && o != slow {
		if o == failure {
			e.consecutive++
		} else {
			e.consecutive = 0
		}
		if cfg.FailurePercent > 0 {
			if now-e.winStart >= int64(cfg.Interval) {
				e.winStart, e.winReqs, e.winFails = now, 0, 0
			}
			e.winReqs++
			if o == failure {
				e.winFails++
			}
		}
		switch {
		case cfg.ConsecutiveFailures > 0 && e.consecutive >= cfg.ConsecutiveFailures:
			reason = semconv.ReasonConsecutiveError
		case cfg.FailurePercent > 0 && e.winReqs >= max(cfg.MinRequests, 1) &&
			e.winFails*100 >= cfg.FailurePercent*e.winReqs:
			reason = semconv.ReasonSuccessRate
		}
	}
	if b.latencyEject && o != failure { // a failure's latency says nothing about speed
		if b.slow(latency) {
			e.slowRun++
		} else {
			e.slowRun = 0
		}
		if reason == "" && e.slowRun >= cfg.ConsecutiveSlow {
			reason = semconv.ReasonLatency
		}
	}
	e.mu.Unlock()

	if reason != "" && b.eject(e, now, reason) {
		return reason
	}
	return ""
}

// classify maps the result of one attempt sent by Transport to an outcome. req is the caller's
// request: when its context is done the caller gave up, which says little about the instance.
func (b *Balancer) classify(req *http.Request, resp *http.Response, err error) outcome {
	if err != nil {
		switch ctxErr := req.Context().Err(); {
		case errors.Is(ctxErr, context.Canceled):
			return cancelled
		case ctxErr != nil:
			return slow // the caller's deadline ran out while the instance was working
		}
	}
	switch c := b.opts.classifier(resp, err); {
	case c.Local:
		return ignored
	case c.Failure:
		return failure
	case err != nil:
		return ignored
	case c.Retryable: // shed (429): healthy, but steer away
		return slow
	}
	return success
}
