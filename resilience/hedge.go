package resilience

import (
	"context"
	"net/http"
	"time"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/internal/eofbody"
	"github.com/cloudchassis/kit/resilience/policy"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// hedgeConfig configures hedgePolicy (from Config: see its fields).
type hedgeConfig struct {
	// Delay sends a hedge when the first attempt has not answered after Delay. With Percentile set it
	// is the lower bound of the delay (defaultHedgeMinDelay if 0) and the delay used until enough
	// latencies were observed (no hedging meanwhile if 0).
	Delay time.Duration
	// Percentile (0-1, e.g. 0.95) hedges after the observed latency percentile of recent attempts
	// over the last 5 to 10 s. 0 uses Delay alone.
	Percentile float64
	// MaxHedges is the number of extra attempts per call; 0 means 1.
	MaxHedges int
}

// hedgePolicy sends up to MaxHedges extra copies of a Replayable request when the first has not answered
// after the hedge delay ("The Tail at Scale", Dean & Barroso 2013): the first good answer (no error,
// not Retryable: by default not 429, 502, 503 or 504) wins, the other attempts are cancelled and their responses drained and closed
// before RoundTrip returns, so no goroutine outlives the call. Each hedge takes a token from budget
// (shared with retryPolicy, which deposits: put it above). A failed attempt does not start a
// hedge: retries are retryPolicy's business. next should be a balancer, so hedges go to other instances.
// Non-replayable requests, and bodies without GetBody, pass straight through.
func hedgePolicy(cfg hedgeConfig, budget *policy.Budget, opts ...Option) Middleware {
	o := newOptions(opts)
	tel := o.instruments()
	tel.observeBudget(budget)
	return func(next http.RoundTripper) http.RoundTripper {
		if cfg.Delay <= 0 && cfg.Percentile <= 0 {
			return next
		}
		h := &hedger{cfg: cfg, budget: budget, next: next, tel: tel, classify: o.classify}
		h.direct, _ = next.(discovery.TriedRoundTripper)
		h.cfg.MaxHedges = max(cfg.MaxHedges, 1)
		if cfg.Percentile > 0 {
			h.lat = newLatencyTracker(cfg.Percentile)
			if h.cfg.Delay <= 0 {
				h.floor = defaultHedgeMinDelay
			} else {
				h.floor = h.cfg.Delay
			}
		}
		return h
	}
}

type hedger struct {
	cfg      hedgeConfig
	budget   *policy.Budget
	next     http.RoundTripper
	direct   discovery.TriedRoundTripper // next, when it takes the Tried directly
	tel      *instruments
	lat      *latencyTracker
	floor    time.Duration
	classify discovery.Classifier
}

type hedgeResult struct {
	i    int
	resp *http.Response
	err  error
	took time.Duration
}

func (h *hedger) delay() time.Duration {
	if h.lat == nil {
		return h.cfg.Delay
	}
	if est := h.lat.Estimate(); est > 0 {
		return max(est, h.floor)
	}
	return h.cfg.Delay // 0 until enough samples: no hedging
}

func (h *hedger) RoundTrip(req *http.Request) (*http.Response, error) {
	return h.RoundTripTried(req, nil)
}

// RoundTripTried implements discovery.TriedRoundTripper: Retry above hands over the call's Tried.
func (h *hedger) RoundTripTried(req *http.Request, tried *discovery.Tried) (*http.Response, error) {
	delay := h.delay()
	hasBody := req.Body != nil && req.Body != http.NoBody
	if delay <= 0 || !Replayable(req) || (hasBody && req.GetBody == nil) {
		return h.timed(req, tried)
	}
	if tried == nil && h.direct != nil {
		tried = new(discovery.Tried) // hedges avoid the instances already tried
	}
	ctx := req.Context()
	n := 1 + h.cfg.MaxHedges
	results := make(chan hedgeResult, n)
	cancels := make([]context.CancelFunc, 0, n)
	launch := func() error {
		actx, cancel := context.WithCancel(ctx)
		ar, err := attemptRequest(actx, req, len(cancels) > 0)
		if err != nil {
			cancel()
			return err
		}
		i := len(cancels)
		cancels = append(cancels, cancel)
		go func() {
			start := time.Now()
			resp, err := send(h.next, h.direct, ar, tried)
			results <- hedgeResult{i: i, resp: resp, err: err, took: time.Since(start)}
		}()
		return nil
	}
	if err := launch(); err != nil {
		return nil, err
	}
	inflight := 1
	timer := time.NewTimer(delay)
	defer timer.Stop()
	var last hedgeResult
	for {
		select {
		case <-timer.C:
			if len(cancels) >= n || ctx.Err() != nil {
				continue
			}
			if h.budget != nil && !h.budget.TryWithdraw() {
				h.tel.reject(ctx, semconv.ReasonBudgetExhausted, "")
				continue // keep waiting for the attempts already out
			}
			if launch() == nil {
				inflight++
				h.tel.hedge(ctx, len(cancels))
				h.tel.attempt(ctx, attemptHedge)
				if len(cancels) < n {
					timer.Reset(delay)
				}
			}
		case res := <-results:
			inflight--
			if res.err == nil && !h.classify(res.resp, nil).Retryable || inflight == 0 {
				if res.err == nil && h.lat != nil {
					// The winner's own latency. Recording the call's elapsed time instead (a lower bound
					// of the slow attempt's) feeds back: hedged calls are by construction the slowest
					// 1-q, so every one of them lands above the estimate and drags it up until the
					// delay reaches the slow mode.
					h.lat.Record(res.took)
				}
				if res.i > 0 && res.err == nil {
					h.tel.hedgeWon(ctx)
				}
				discard(last.resp)
				h.finish(res, cancels, results, inflight)
				return h.result(res, cancels)
			}
			discard(last.resp) // keep only the latest failure, in case every attempt fails
			last = res
		}
	}
}

// finish cancels the losers and waits for them, so their responses are closed and their goroutines
// have exited before RoundTrip returns.
func (h *hedger) finish(win hedgeResult, cancels []context.CancelFunc, results chan hedgeResult, inflight int) {
	for i, c := range cancels {
		if i != win.i {
			c()
		}
	}
	for ; inflight > 0; inflight-- {
		discard((<-results).resp)
	}
}

func (h *hedger) result(win hedgeResult, cancels []context.CancelFunc) (*http.Response, error) {
	if win.err != nil {
		cancels[win.i]()
		return nil, win.err
	}
	eofbody.After(win.resp, eofbody.Func(cancels[win.i]))
	return win.resp, nil
}

// timed is the path without a hedge; it still feeds the latency estimate.
func (h *hedger) timed(req *http.Request, tried *discovery.Tried) (*http.Response, error) {
	if h.lat == nil {
		return send(h.next, h.direct, req, tried)
	}
	start := time.Now()
	resp, err := send(h.next, h.direct, req, tried)
	if err == nil {
		h.lat.Record(time.Since(start))
	}
	return resp, err
}
