package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Defaults for New and Check.
const (
	DefaultTimeout  = 2 * time.Second
	DefaultCacheTTL = time.Second
)

// Kind is the probe a check belongs to.
type Kind int

const (
	// Liveness checks tell whether the process should be restarted. Keep them process-local: a
	// failing dependency is not a reason to restart.
	Liveness Kind = iota
	// Readiness checks tell whether the process should receive traffic.
	Readiness
	// Startup checks must pass once before the process is ready; they are not run after that.
	Startup
)

func (k Kind) String() string {
	switch k {
	case Liveness:
		return "liveness"
	case Readiness:
		return "readiness"
	case Startup:
		return "startup"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Status of a check or a probe.
type Status string

const (
	StatusOK       Status = "ok"
	StatusDegraded Status = "degraded" // a non-critical check fails; the probe still passes
	StatusFail     Status = "fail"
	StatusStarting Status = "starting"
	StatusDraining Status = "draining"
)

// Check is one health check.
type Check struct {
	Name string
	// Func returns nil when healthy. It must honour ctx, which carries the check's timeout.
	Func func(ctx context.Context) error
	// Timeout bounds one run (default DefaultTimeout).
	Timeout time.Duration
	// NonCritical checks degrade the probe instead of failing it.
	NonCritical bool
}

// Result is the outcome of one check.
type Result struct {
	Status   Status        `json:"status"`
	Duration time.Duration `json:"-"`
	Error    string        `json:"error,omitempty"`
	Critical bool          `json:"critical"`
}

// MarshalJSON renders Duration as text ("1.2ms").
func (r Result) MarshalJSON() ([]byte, error) {
	type plain Result
	return json.Marshal(struct {
		plain
		Duration string `json:"duration"`
	}{plain(r), r.Duration.String()})
}

// Report is a probe's answer.
type Report struct {
	Status Status            `json:"status"`
	Checks map[string]Result `json:"checks,omitempty"`
	// Checked is when the checks ran; a cached report keeps its time.
	Checked time.Time `json:"checked"`
}

// OK reports whether the probe passes.
func (r Report) OK() bool { return r.Status == StatusOK || r.Status == StatusDegraded }

// Option configures a Checker.
type Option interface{ apply(*Checker) }

type optionFunc func(*Checker)

func (f optionFunc) apply(o *Checker) { f(o) }

// WithCacheTTL sets how long a probe's result is reused (default DefaultCacheTTL; 0 disables).
func WithCacheTTL(d time.Duration) Option { return optionFunc(func(c *Checker) { c.ttl = d }) }

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Option { return optionFunc(func(c *Checker) { c.now = now }) }

// Checker holds the checks and the process state.
type Checker struct {
	ttl time.Duration
	now func() time.Time

	mu       sync.Mutex
	checks   [3][]Check
	started  bool
	draining bool
	cache    [3]cached
}

type cached struct {
	report  Report
	valid   bool
	pending chan struct{} // non-nil while one evaluation is running; closed when it ends
}

// New returns a Checker with no checks, not started.
func New(opts ...Option) *Checker {
	c := &Checker{ttl: DefaultCacheTTL, now: time.Now}
	for _, o := range opts {
		o.apply(c)
	}
	return c
}

// Add registers a check for a probe kind.
func (c *Checker) Add(kind Kind, check Check) {
	if check.Timeout <= 0 {
		check.Timeout = DefaultTimeout
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks[kind] = append(c.checks[kind], check)
	c.cache[kind].valid = false
}

// MarkStarted records that start-up completed: readiness may pass from now on and startup checks are
// no longer run.
func (c *Checker) MarkStarted() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.started = true
	for k := range c.cache {
		c.cache[k].valid = false
	}
}

// MarkDraining makes readiness fail from now on, while liveness keeps passing. It is not undone.
func (c *Checker) MarkDraining() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.draining = true
	c.cache[Readiness].valid = false
}

// Draining reports whether MarkDraining was called.
func (c *Checker) Draining() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.draining
}

// Check evaluates a probe, reusing a result younger than the cache TTL. Concurrent callers share one
// evaluation.
func (c *Checker) Check(ctx context.Context, kind Kind) Report {
	for {
		c.mu.Lock()
		if r, ok := c.stateReport(kind); ok {
			c.mu.Unlock()
			return r
		}
		e := &c.cache[kind]
		if e.valid && c.now().Sub(e.report.Checked) < c.ttl {
			r := e.report
			c.mu.Unlock()
			return r
		}
		if e.pending != nil {
			ch := e.pending
			c.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return Report{Status: StatusFail, Checked: c.now()}
			}
		}
		ch := make(chan struct{})
		e.pending = ch
		checks := append([]Check(nil), c.checks[kind]...)
		c.mu.Unlock()

		// The evaluation is shared: it must not die with the first caller's request.
		r := run(context.WithoutCancel(ctx), checks, c.now)

		c.mu.Lock()
		if st, ok := c.stateReport(kind); ok {
			r.Status = st.Status // state changed meanwhile (draining): it wins
		} else if kind == Startup && !c.started && r.Status != StatusFail {
			r.Status = StatusStarting // checks pass, but the start hooks have not all finished
		}
		c.cache[kind] = cached{report: r, valid: true}
		close(ch)
		c.mu.Unlock()
		return r
	}
}

// stateReport answers from the process state alone when it decides the probe. c.mu is held.
func (c *Checker) stateReport(kind Kind) (Report, bool) {
	switch {
	case kind == Startup && c.started:
		return Report{Status: StatusOK, Checked: c.now()}, true
	case kind == Readiness && c.draining:
		return Report{Status: StatusDraining, Checked: c.now()}, true
	case kind == Readiness && !c.started:
		return Report{Status: StatusStarting, Checked: c.now()}, true
	}
	return Report{}, false
}

// RunStartup runs the startup checks once, ignoring state and cache; the start sequence calls it
// until it passes.
func (c *Checker) RunStartup(ctx context.Context) Report {
	c.mu.Lock()
	checks := append([]Check(nil), c.checks[Startup]...)
	c.mu.Unlock()
	return run(ctx, checks, c.now)
}

func run(ctx context.Context, checks []Check, now func() time.Time) Report {
	r := Report{Status: StatusOK, Checked: now()}
	if len(checks) == 0 {
		return r
	}
	r.Checks = make(map[string]Result, len(checks))
	results := make([]Result, len(checks))
	var wg sync.WaitGroup
	for i, ch := range checks {
		wg.Go(func() { results[i] = runOne(ctx, ch, now) })
	}
	wg.Wait()
	for i, ch := range checks {
		res := results[i]
		r.Checks[ch.Name] = res
		if res.Status == StatusFail {
			if res.Critical {
				r.Status = StatusFail
			} else if r.Status == StatusOK {
				r.Status = StatusDegraded
			}
		}
	}
	return r
}

// runOne runs a check under its timeout. A check that ignores its context is abandoned at the
// timeout (its goroutine finishes on its own): a probe must answer in time.
func runOne(ctx context.Context, ch Check, now func() time.Time) (res Result) {
	res.Critical = !ch.NonCritical
	ctx, cancel := context.WithTimeout(ctx, ch.Timeout)
	defer cancel()
	t0 := now()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("check panicked: %v", p)
			}
		}()
		done <- ch.Func(ctx)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = fmt.Errorf("timed out after %v", ch.Timeout)
	}
	res.Duration = now().Sub(t0)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %v: %w", ch.Timeout, err)
		}
		res.Status, res.Error = StatusFail, err.Error()
		return res
	}
	res.Status = StatusOK
	return res
}

// Handler serves one probe: 200 when it passes, 503 otherwise, with the Report as JSON. HEAD gets the
// status alone.
func (c *Checker) Handler(kind Kind) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep := c.Check(r.Context(), kind)
		code := http.StatusOK
		if !rep.OK() {
			code = http.StatusServiceUnavailable
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		if r.Method == http.MethodHead {
			return
		}
		_ = json.NewEncoder(w).Encode(rep)
	})
}

// Register mounts /livez, /readyz and /startupz on mux.
func (c *Checker) Register(mux *http.ServeMux) {
	mux.Handle("GET /livez", c.Handler(Liveness))
	mux.Handle("GET /readyz", c.Handler(Readiness))
	mux.Handle("GET /startupz", c.Handler(Startup))
}
