package guard_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/cloudchassis/kit/guard"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// workers simulates a server with n workers that each take d per request: beyond n concurrent
// requests, latency grows with the queue, as it does on a real saturated server.
func workers(n int, d time.Duration) http.Handler {
	sem := make(chan struct{}, n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sem <- struct{}{}
		time.Sleep(d)
		<-sem
		w.WriteHeader(http.StatusOK)
	})
}

type result struct {
	status  int
	latency time.Duration
	route   string
}

// openLoop sends rate requests per second for dur, whatever the server does, and collects results.
func openLoop(h http.Handler, rate int, dur time.Duration, mk func(i int) *http.Request) []result {
	var mu sync.Mutex
	var out []result
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(rate)
	i := 0
	for end := time.Now().Add(dur); time.Now().Before(end); time.Sleep(interval) {
		r := mk(i)
		i++
		wg.Go(func() {
			start := time.Now()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			mu.Lock()
			out = append(out, result{rec.Code, time.Since(start), r.URL.Path})
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func p99(rs []result, status int) time.Duration {
	var ls []time.Duration
	for _, r := range rs {
		if r.status == status {
			ls = append(ls, r.latency)
		}
	}
	if len(ls) == 0 {
		return 0
	}
	slices.Sort(ls)
	return ls[len(ls)*99/100]
}

func count(rs []result, status int) int {
	n := 0
	for _, r := range rs {
		if r.status == status {
			n++
		}
	}
	return n
}

func get(path string) func(int) *http.Request {
	return func(int) *http.Request { return httptest.NewRequest(http.MethodGet, path, nil) }
}

func TestShedderAdaptsToOverload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Capacity: 10 workers × 50 requests/s = 500 requests/s at 20 ms.
		s := must(guard.NewShedder(guard.DefaultShedConfig()))
		h := s.Middleware(workers(10, 20*time.Millisecond))

		// Warm up at half capacity: nothing is shed, latency is the service time.
		warm := openLoop(h, 250, 2*time.Second, get("/"))
		if n := count(warm, http.StatusServiceUnavailable); n != 0 {
			t.Fatalf("%d requests shed at half capacity", n)
		}
		// Three times capacity for 10 s.
		over := openLoop(h, 1500, 10*time.Second, get("/"))
		// Judge the last 5 s, after the limit has converged.
		late := over[len(over)/2:]
		okN := count(late, http.StatusOK)
		goodput := float64(okN) / 5
		if goodput < 0.9*500 {
			t.Errorf("goodput %.0f/s at 3× load, want ≥ 90%% of 500/s", goodput)
		}
		if got := p99(late, http.StatusOK); got > 40*time.Millisecond {
			t.Errorf("admitted p99 %v, want ≤ 2× the 20 ms service time", got)
		}
		if l := s.Limit(); l < 10 || l > 25 {
			t.Errorf("limit %d after overload, want near the 10 workers", l)
		}
		if n := count(late, http.StatusServiceUnavailable); n < len(late)/2 {
			t.Errorf("only %d of %d requests shed at 3× capacity", n, len(late))
		}
		t.Logf("limit %d, goodput %.0f/s, admitted p99 %v, shed %d of %d", s.Limit(), goodput, p99(late, 200), count(late, 503), len(late))

		// Load gone: the limit stays usable and nothing is shed.
		after := openLoop(h, 250, 2*time.Second, get("/"))
		if n := count(after, http.StatusServiceUnavailable); n != 0 {
			t.Errorf("%d requests shed after the overload ended", n)
		}
	})
}

func TestShedderWithoutSheddingForComparison(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := workers(10, 20*time.Millisecond)
		over := openLoop(h, 1500, 2*time.Second, get("/"))
		// Every request is admitted and queues: latency grows without bound.
		if got := p99(over, http.StatusOK); got < time.Second {
			t.Errorf("unprotected p99 %v: the simulation is not overloaded", got)
		}
	})
}

func TestShedderPriorities(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := guard.DefaultShedConfig()
		cfg.CriticalRoutes = []string{"GET /livez"}
		mux := http.NewServeMux()
		slow := workers(10, 20*time.Millisecond)
		mux.Handle("GET /", slow)
		mux.Handle("GET /livez", slow)
		mux.Handle("GET /batch", slow)
		s := must(guard.NewShedder(cfg, guard.WithRouteFunc(guard.MuxRoute(mux)),
			guard.WithRoutePriorities(map[string]guard.Priority{"GET /batch": guard.PrioritySheddable})))
		h := s.Middleware(mux)
		paths := []string{"/", "/", "/livez", "/batch", "/"}
		rs := openLoop(h, 1500, 6*time.Second, func(i int) *http.Request {
			r := httptest.NewRequest(http.MethodGet, paths[i%len(paths)], nil)
			if i%7 == 0 {
				r.Header.Set("X-Request-Priority", "critical") // must not exempt anything
			}
			return r
		})
		shed := map[string]int{}
		total := map[string]int{}
		for _, r := range rs[len(rs)/2:] {
			total[r.route]++
			if r.status == http.StatusServiceUnavailable {
				shed[r.route]++
			}
		}
		if shed["/livez"] != 0 {
			t.Errorf("critical route shed %d times", shed["/livez"])
		}
		if shed["/"] == 0 {
			t.Errorf("nothing shed at 3× capacity (header must not raise priority)")
		}
		rate := func(p string) float64 { return float64(shed[p]) / float64(total[p]) }
		if rate("/batch") <= rate("/") {
			t.Errorf("sheddable route shed at %.2f, default at %.2f: sheddable must go first", rate("/batch"), rate("/"))
		}
	})
}

func TestShedderRefusalIsCountedAndLogged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		var logs bytes.Buffer
		cfg := guard.DefaultShedConfig()
		cfg.InitialLimit, cfg.MinLimit = 4, 4
		s := must(guard.NewShedder(cfg, guard.WithMeterProvider(mp),
			guard.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
			guard.WithRouteFunc(func(*http.Request) string { return "GET /items/{id}" })))
		defer s.Close()
		release := make(chan struct{})
		h := s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/items/1", nil)) })
		}
		synctest.Wait()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/items/2", nil))
		close(release)
		wg.Wait()
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") != "1" {
			t.Fatalf("status %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
		}
		if !strings.Contains(logs.String(), "reason=concurrency_limit") || !strings.Contains(logs.String(), `route="GET /items/{id}"`) {
			t.Errorf("log = %s", logs.String())
		}
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		found := map[string]bool{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				switch d := m.Data.(type) {
				case metricdata.Sum[int64]:
					if m.Name == semconv.MetricServerShed && len(d.DataPoints) == 1 && d.DataPoints[0].Value == 1 {
						pr, _ := d.DataPoints[0].Attributes.Value(semconv.AttrPriority)
						rt, _ := d.DataPoints[0].Attributes.Value(semconv.AttrHTTPRoute)
						found[m.Name] = pr.AsString() == "default" && rt.AsString() == "GET /items/{id}"
					}
				case metricdata.Gauge[int64]:
					found[m.Name] = len(d.DataPoints) == 1 && d.DataPoints[0].Value == 4
				}
			}
		}
		if !found[semconv.MetricServerShed] || !found[semconv.MetricServerConcurrencyLimit] {
			t.Errorf("metrics: %+v", rm.ScopeMetrics)
		}
	})
}

func TestShedderQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := guard.DefaultShedConfig()
		cfg.InitialLimit, cfg.MinLimit, cfg.MaxLimit = 2, 2, 2
		cfg.QueueTimeout = 50 * time.Millisecond
		cfg.QueueSize = 2
		s := must(guard.NewShedder(cfg))
		h := s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(30 * time.Millisecond)
		}))
		var mu sync.Mutex
		codes := map[int]int{}
		var wg sync.WaitGroup
		// 2 run, 2 queue and get a slot after 30 ms, 1 finds the queue full.
		for range 5 {
			wg.Go(func() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
				mu.Lock()
				codes[rec.Code]++
				mu.Unlock()
			})
			synctest.Wait()
		}
		wg.Wait()
		if codes[200] != 4 || codes[503] != 1 {
			t.Fatalf("codes %v, want 4×200 and 1×503", codes)
		}
		// A queued request that waits longer than QueueTimeout is refused and gives nothing back twice.
		block := make(chan struct{})
		h2 := s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
		for range 2 {
			wg.Go(func() { h2.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil)) })
		}
		synctest.Wait()
		rec := httptest.NewRecorder()
		start := time.Now()
		h2.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		if rec.Code != 503 || time.Since(start) != 50*time.Millisecond {
			t.Fatalf("queued request: %d after %v, want 503 after 50ms", rec.Code, time.Since(start))
		}
		close(block)
		wg.Wait()
		if s.Inflight() != 0 {
			t.Fatalf("%d in flight after all requests completed", s.Inflight())
		}
		// Sheddable requests never queue.
		if _, ok := s.TryAcquire(guard.PrioritySheddable); !ok {
			t.Fatal("idle shedder refused a sheddable request")
		}
	})
}

func TestShedderQueueCancellation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := guard.DefaultShedConfig()
		cfg.InitialLimit, cfg.MinLimit, cfg.MaxLimit = 1, 1, 1
		cfg.QueueTimeout = time.Second
		s := must(guard.NewShedder(cfg))
		t1, ok := s.Acquire(context.Background(), guard.PriorityDefault)
		if !ok {
			t.Fatal("first acquire refused")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan bool)
		go func() {
			_, ok := s.Acquire(ctx, guard.PriorityDefault)
			done <- ok
		}()
		synctest.Wait()
		cancel()
		if <-done {
			t.Fatal("canceled waiter was admitted")
		}
		t1.Done()
		if s.Inflight() != 0 {
			t.Fatalf("inflight %d", s.Inflight())
		}
		// Critical requests pass a full shedder.
		a, _ := s.Acquire(context.Background(), guard.PriorityDefault)
		c, ok := s.TryAcquire(guard.PriorityCritical)
		if !ok {
			t.Fatal("critical request refused")
		}
		a.Done()
		c.Done()
	})
}

func TestShedConfig(t *testing.T) {
	if err := guard.DefaultShedConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := guard.ShedConfig{MinLimit: 10, MaxLimit: 5, Tolerance: 0.5, Smoothing: 2}
	err := bad.Validate()
	if err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Fatalf("Validate must report the three problems, got %v", err)
	}
	if must((guard.ShedConfig{}).NewShedder()) != nil {
		t.Fatal("a disabled config must give no shedder")
	}
	var s *guard.Shedder
	if s.Middleware(http.NotFoundHandler()) == nil {
		t.Fatal("nil shedder middleware")
	}
	for in, want := range map[string]guard.Priority{"critical": guard.PriorityCritical, "LOW": guard.PrioritySheddable, "": guard.PriorityDefault} {
		if p, ok := guard.ParsePriority(in); !ok || p != want {
			t.Errorf("ParsePriority(%q) = %v, %v", in, p, ok)
		}
	}
	if _, ok := guard.ParsePriority("urgent"); ok {
		t.Error("unknown priority accepted")
	}
}

// TestShedderColdStartUnderOverload starts the service directly at 3× its capacity (a restart
// during an incident): slow start must measure the baseline before queueing sets in.
func TestShedderColdStartUnderOverload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := must(guard.NewShedder(guard.DefaultShedConfig()))
		h := s.Middleware(workers(10, 20*time.Millisecond))
		rs := openLoop(h, 1500, 6*time.Second, get("/"))
		late := rs[len(rs)/3:]
		goodput := float64(count(late, http.StatusOK)) / 4
		if goodput < 450 {
			t.Errorf("goodput %.0f/s, want ≥ 90%% of 500/s", goodput)
		}
		if got := p99(late, http.StatusOK); got > 40*time.Millisecond {
			t.Errorf("admitted p99 %v, want ≤ 40 ms", got)
		}
		if l := s.Limit(); l < 10 || l > 25 {
			t.Errorf("limit %d, want near the 10 workers", l)
		}
		// The generous initial limit holds only until the first windows show the overload.
		early := rs[:len(rs)/12] // the first half second
		t.Logf("first 0.5 s: %d shed of %d, admitted p99 %v; later: limit %d, goodput %.0f/s, admitted p99 %v",
			count(early, http.StatusServiceUnavailable), len(early), p99(early, http.StatusOK), s.Limit(), goodput, p99(late, http.StatusOK))
		if n := count(early, http.StatusServiceUnavailable); n < len(early)/3 {
			t.Errorf("only %d of %d requests shed in the first 0.5 s at 3× capacity", n, len(early))
		}
	})
}

// TestShedderSlowStartGrowsFast checks that a large service is not held at the initial limit.
func TestShedderSlowStartGrowsFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := guard.DefaultShedConfig()
		cfg.InitialLimit = 10 // start well below the load, so that slow start must grow the limit
		s := must(guard.NewShedder(cfg))
		h := s.Middleware(workers(400, 20*time.Millisecond))
		// Capacity 20000/s; offer 8000/s (needs about 160 in flight) for one second.
		rs := openLoop(h, 8000, time.Second, get("/"))
		if l := s.Limit(); l < 160 {
			t.Errorf("limit %d after 1 s, want ≥ 160", l)
		}
		if shed := count(rs[len(rs)/2:], http.StatusServiceUnavailable); shed != 0 {
			t.Errorf("%d requests shed in the second half-second below capacity", shed)
		}
	})
}

// TestShedderFreshInstanceTakesOverLoad is a new instance in a rolling deploy: it gets its share of
// the traffic at once. With default settings it must refuse none of it, whether the requests arrive
// as one burst or as a steady stream of 10 to 30 in flight, and whatever the spread of latencies.
func TestShedderFreshInstanceTakesOverLoad(t *testing.T) {
	for _, tc := range []struct {
		name     string
		rate     int // requests per second for 2 s, each taking about 20 ms
		burst    int // requests sent at once before the stream
		jittered bool
	}{
		{name: "10 in flight", rate: 500},
		{name: "30 in flight", rate: 1500},
		{name: "burst of 30 then 20 in flight", rate: 1000, burst: 30},
		{name: "30 in flight, latency 5-35 ms", rate: 1500, jittered: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := must(guard.NewShedder(guard.DefaultShedConfig()))
				var h http.Handler = workers(400, 20*time.Millisecond) // far from saturated
				if tc.jittered {
					var mu sync.Mutex
					i := 0
					h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						mu.Lock()
						i++
						d := time.Duration(5+(i*7919)%31) * time.Millisecond
						mu.Unlock()
						time.Sleep(d)
					})
				}
				h = s.Middleware(h)
				var wg sync.WaitGroup
				var mu sync.Mutex
				shed := 0
				for range tc.burst {
					wg.Go(func() {
						rec := httptest.NewRecorder()
						h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
						if rec.Code != http.StatusOK {
							mu.Lock()
							shed++
							mu.Unlock()
						}
					})
				}
				rs := openLoop(h, tc.rate, 2*time.Second, get("/"))
				wg.Wait()
				shed += len(rs) - count(rs, http.StatusOK)
				if shed != 0 {
					t.Errorf("%d of %d requests refused by a fresh instance below its capacity (limit now %d)", shed, len(rs)+tc.burst, s.Limit())
				}
			})
		})
	}
}

// TestShedderFreshInstanceSlowFirstWindow: a new instance's first window is often slow for reasons
// that are not overload (connection pools opening, caches filling). One such window must not end
// slow start and cut the limit to the throughput of that window.
func TestShedderFreshInstanceSlowFirstWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := must(guard.NewShedder(guard.DefaultShedConfig()))
		start := time.Now()
		var inflight atomic.Int64
		h := s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := inflight.Add(1)
			defer inflight.Add(-1)
			d := 20 * time.Millisecond
			if time.Since(start) < 100*time.Millisecond && n > 4 {
				d = 60 * time.Millisecond // a connection being opened for every request beyond the pool's 4
			}
			time.Sleep(d)
		}))
		rs := openLoop(h, 1000, 2*time.Second, get("/"))
		if n := count(rs, http.StatusServiceUnavailable); n != 0 {
			t.Errorf("%d of %d requests shed after one slow window (limit %d)", n, len(rs), s.Limit())
		}
	})
}

// TestShedderLightLoadNoiseKeepsTheLimit: on a busy machine a lightly loaded instance sees its latency
// double for seconds (CPU contention, a slow dependency) with only a few requests in flight. That is
// not overload that admission can relieve: it must not end slow start and cut the limit to the
// window's throughput (Little's law at 20 requests/s gives a limit of 1), or the next spike is shed.
func TestShedderLightLoadNoiseKeepsTheLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := must(guard.NewShedder(guard.DefaultShedConfig()))
		start := time.Now()
		h := s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d := 20 * time.Millisecond
			if el := time.Since(start); el > 500*time.Millisecond && el < 2*time.Second {
				d = 60 * time.Millisecond // three times the baseline, with ~1 request in flight
			}
			time.Sleep(d)
		}))
		if rs := openLoop(h, 20, 3*time.Second, get("/")); count(rs, http.StatusServiceUnavailable) != 0 {
			t.Fatalf("light load shed")
		}
		if l := s.Limit(); l < guard.DefaultInitialLimit/2 {
			t.Errorf("limit %d after slow, lightly loaded windows; want it kept near %d", l, guard.DefaultInitialLimit)
		}
		// The spike: 30 in flight at the baseline latency, well within the server's capacity.
		rs := openLoop(h, 1500, time.Second, get("/"))
		if n := count(rs, http.StatusServiceUnavailable); n != 0 {
			t.Errorf("%d of %d requests of a spike shed after a noisy quiet period (limit %d)", n, len(rs), s.Limit())
		}
	})
}

// TestShedderIdleGapIsNotAWindow: windows close when a request completes, so the first window after
// an idle spell spans the whole spell. Its throughput (a few requests over a minute) must not end
// slow start and set the limit, and the slow window before the gap is not "consecutive" with it.
func TestShedderIdleGapIsNotAWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := must(guard.NewShedder(guard.DefaultShedConfig()))
		var d atomic.Int64
		h := s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(time.Duration(d.Load()))
		}))
		serve := func() int {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			return rec.Code
		}
		burst := func(n int) (shed int) {
			var wg sync.WaitGroup
			var m atomic.Int64
			for range n {
				wg.Go(func() {
					if serve() == http.StatusServiceUnavailable {
						m.Add(1)
					}
				})
			}
			wg.Wait()
			return int(m.Load())
		}
		d.Store(int64(10 * time.Millisecond))
		for range 30 { // the baseline: one at a time, 10 ms
			serve()
		}
		d.Store(int64(40 * time.Millisecond))
		for range 5 { // slow windows with a queue; the last one is left open
			burst(80)
		}
		time.Sleep(time.Minute)
		for range 5 { // the first window that closes here began a minute ago
			burst(80)
		}
		if l := s.Limit(); l < 20 {
			t.Errorf("limit %d after an idle minute between two bursts; want about the burst's concurrency", l)
		}
	})
}

// must returns v, and panics on err: constructors fail only when a meter provider refuses an
// instrument, which the tests' providers never do.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
