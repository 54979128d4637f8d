package faults_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/resilience"
)

// Scenario 1: SIGKILL of one of three real server processes under steady GET load.
func TestScenarioSIGKILL(t *testing.T) {
	skipShort(t)
	var procs []*process
	var insts []discovery.Instance
	for i := range 3 {
		p := startServer(t, fmt.Sprintf("s%d", i))
		procs = append(procs, p)
		insts = append(insts, instanceOf(t, fmt.Sprintf("s%d", i), p.addr))
	}
	cfg := resilience.DefaultConfig()
	cfg.Timeout = time.Second
	cfg.AttemptTimeout = 300 * time.Millisecond
	c := newClient(t, "svc", cfg, insts)

	victim := procs[0]
	var killedAt time.Time
	timer := time.AfterFunc(time.Second, func() {
		killedAt = time.Now()
		_ = victim.cmd.Process.Signal(syscall.SIGKILL)
	})
	defer timer.Stop()
	rs := load(t, c, "svc", 200, 4*time.Second)

	ok, rate := successRate(rs)
	// "Out of rotation within 1 s" is measured from the first attempt that met the dead instance: that
	// is when the client can know. P2C may not pick an instance for a while (its latency estimate
	// was high), and then the first attempt after the kill comes later than the kill itself.
	var after, late int
	var first, last time.Time
	for _, at := range c.log.times(victim.addr) {
		if at.After(killedAt) {
			if after == 0 {
				first = at
			}
			after++
			last = at
			if at.Sub(first) > time.Second {
				late++
			}
		}
	}
	when := "none"
	if after > 0 {
		when = fmt.Sprintf("the first %v and the last %v after it", first.Sub(killedAt).Round(time.Millisecond), last.Sub(killedAt).Round(time.Millisecond))
	}
	t.Logf("SIGKILL 1 of 3 at 200 qps for 4 s: %d/%d ok (%.3f%%); attempts to the dead instance after the kill: %d (%s), %d more than 1 s after the first",
		ok, len(rs), 100*rate, after, when, late)
	if ok != len(rs) {
		t.Errorf("success %d/%d, want 100%%: %v", ok, len(rs), firstErrors(rs, 5))
	}
	if late > 0 {
		t.Errorf("dead instance still picked %d times more than 1 s after the first failed attempt", late)
	}
}

// Scenario 2: one of three instances answers 503 at once.
func TestScenarioFast503(t *testing.T) {
	skipShort(t)
	good := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer bad.Close()
	g1, g2 := httptest.NewServer(good), httptest.NewServer(good)
	defer g1.Close()
	defer g2.Close()
	insts := []discovery.Instance{
		instanceOf(t, "bad", bad.Listener.Addr().String()),
		instanceOf(t, "g1", g1.Listener.Addr().String()),
		instanceOf(t, "g2", g2.Listener.Addr().String()),
	}
	c := newClient(t, "svc", resilience.DefaultConfig(), insts)
	start := time.Now()
	rs := load(t, c, "svc", 200, 3*time.Second)
	ok, rate := successRate(rs)
	times := c.log.times(bad.Listener.Addr().String())
	var lastBad time.Duration
	if len(times) > 0 {
		lastBad = times[len(times)-1].Sub(start)
	}
	t.Logf("fast 503 from 1 of 3 at 200 qps for 3 s: %d/%d ok (%.3f%%); %d attempts reached the bad instance, the last %v after the start; amplification %.3f",
		ok, len(rs), 100*rate, len(times), lastBad.Round(time.Millisecond), float64(c.log.total())/float64(len(rs)))
	if rate < 0.999 {
		t.Errorf("success %.4f < 99.9%%: %v", rate, firstErrors(rs, 5))
	}
	var late int
	for _, at := range times {
		if at.Sub(start) > time.Second {
			late++
		}
	}
	// Once ejected, only re-admission probes may reach it: well under 1% of the attempts.
	if late*100 > len(rs) {
		t.Errorf("bad instance got %d attempts after the first second: not ejected", late)
	}
}

// Scenario 3: the dependency is entirely down (every instance 503s at once).
func TestScenarioDependencyDown(t *testing.T) {
	skipShort(t)
	var served atomic.Int64
	down := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	var insts []discovery.Instance
	for i := range 3 {
		s := httptest.NewServer(down)
		defer s.Close()
		insts = append(insts, instanceOf(t, fmt.Sprint("d", i), s.Listener.Addr().String()))
	}
	cfg := resilience.DefaultConfig()
	c := newClient(t, "svc", cfg, insts)
	const qps, dur = 200, 3 * time.Second
	rs := load(t, c, "svc", qps, dur)

	var rejected, other int
	for _, r := range rs {
		if errors.Is(r.err, resilience.ErrBreakerOpen) {
			rejected++
		} else {
			other++
		}
	}
	calls := len(rs)
	attempts := int(served.Load())
	amp := float64(attempts) / float64(calls)
	// Budget: 20% of calls plus the floor of 10/s over a 10 s window (the whole 3 s run sits in one window).
	floor := cfg.BudgetMinPerSecond * cfg.BudgetWindow.Seconds()
	bound := (1.2*float64(calls) + floor) / float64(calls)
	p99 := percentile(rs, 0.99, func(r result) bool { return errors.Is(r.err, resilience.ErrBreakerOpen) })
	t.Logf("dependency down, %d calls at %d qps: %d attempts reached it (amplification %.3f, bound 1.2 + floor %.0f = %.3f); %d calls rejected by an open breaker, p99 of those %v; %d other failures",
		calls, qps, attempts, amp, floor, bound, rejected, p99, other)
	if amp > bound {
		t.Errorf("amplification %.3f over the bound %.3f", amp, bound)
	}
	if rejected == 0 {
		t.Error("no call was rejected by an open breaker")
	}
	if p99 > 5*time.Millisecond {
		t.Errorf("open-breaker rejections p99 %v > 5 ms", p99)
	}
}

// Scenario 4: Linkerd's peak-EWMA experiment, scaled down: 11 instances, one stalls 2 s, 1 s timeout.
func TestScenarioStallingInstance(t *testing.T) {
	skipShort(t)
	var insts []discovery.Instance
	var stallAddr string
	for i := range 11 {
		stall := i == 0
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if stall {
				select {
				case <-time.After(2 * time.Second):
				case <-r.Context().Done():
					return
				}
			}
			w.Write([]byte("ok"))
		}))
		defer s.Close()
		if stall {
			stallAddr = s.Listener.Addr().String()
		}
		insts = append(insts, instanceOf(t, fmt.Sprint("i", i), s.Listener.Addr().String()))
	}
	cfg := resilience.DefaultConfig()
	cfg.Timeout = time.Second
	cfg.AttemptTimeout = 250 * time.Millisecond
	c := newClient(t, "svc", cfg, insts)
	rs := load(t, c, "svc", 200, 10*time.Second)
	ok, rate := successRate(rs)
	t.Logf("1 of 11 stalling 2 s, 1 s overall / 250 ms attempt timeout, 200 qps for 10 s: %d/%d ok (%.4f%%), p50 %v p99 %v p99.9 %v; %d attempts reached the stalled instance",
		ok, len(rs), 100*rate, percentile(rs, 0.5, nil), percentile(rs, 0.99, nil), percentile(rs, 0.999, nil), len(c.log.times(stallAddr)))
	if rate < 0.9999 {
		t.Errorf("success %.5f < 99.99%%: %v", rate, firstErrors(rs, 5))
	}
}

// Scenario 5: latency variability as in "The Tail at Scale": every instance takes 300 ms on 1% of its
// calls, and one instance on a third of them. Peak-EWMA P2C steers away from the slow instance but
// cannot predict the random stalls; hedging after the observed p90 (floor 5 ms) against no hedging.
func TestScenarioHedging(t *testing.T) {
	skipShort(t)
	var insts []discovery.Instance
	for i := range 4 {
		slow := i == 0
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d := time.Millisecond
			if rand.IntN(100) == 0 || slow && rand.IntN(3) == 0 {
				d = 300 * time.Millisecond
			}
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
			w.Write([]byte("ok"))
		}))
		defer s.Close()
		insts = append(insts, instanceOf(t, fmt.Sprint("h", i), s.Listener.Addr().String()))
	}
	run := func(hedge bool) ([]result, int) {
		cfg := resilience.DefaultConfig()
		if hedge {
			cfg.HedgePercentile = 0.9
			cfg.HedgeDelay = 5 * time.Millisecond
		}
		c := newClient(t, "svc", cfg, insts)
		rs := load(t, c, "svc", 200, 12*time.Second) // 2,400 calls: p99.9 is the third-slowest
		return rs, c.log.total()
	}
	base, baseAttempts := run(false)
	hedged, hedgedAttempts := run(true)
	_, baseRate := successRate(base)
	_, hedgedRate := successRate(hedged)
	b999, h999 := percentile(base, 0.999, nil), percentile(hedged, 0.999, nil)
	b99, h99 := percentile(base, 0.99, nil), percentile(hedged, 0.99, nil)
	slowCalls := func(rs []result) (n int) {
		for _, r := range rs {
			if r.lat > 250*time.Millisecond {
				n++
			}
		}
		return n
	}
	extra := float64(hedgedAttempts)/float64(len(hedged)) - float64(baseAttempts)/float64(len(base))
	t.Logf("4 instances slow (300 ms) on 1%% of calls, one of them on 1/3, 200 qps for 12 s: without hedging p99 %v p99.9 %v (ok %.2f%%); hedging after p90 (floor 5 ms): p99 %v p99.9 %v (ok %.2f%%); extra attempts %.1f%% of calls; calls over 250 ms: %d without, %d with hedging",
		b99, b999, 100*baseRate, h99, h999, 100*hedgedRate, 100*extra, slowCalls(base), slowCalls(hedged))
	// p99.9 of 2,400 calls is the third-slowest call, too noisy to assert on. The count of calls that
	// waited for a stall is small (tens), so its ratio is noisy on a loaded machine (4× on a quiet one,
	// 2.6× seen under load): assert that it drops and that p99, which sits in the stall without
	// hedging, falls at least threefold.
	if slowCalls(hedged) >= slowCalls(base) || 3*h99 >= b99 {
		t.Errorf("hedging did not cut the tail: p99 %v vs %v, slow calls %d vs %d", h99, b99, slowCalls(hedged), slowCalls(base))
	}
}
