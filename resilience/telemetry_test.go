package resilience

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// scripted is a fake balancer: attempt n goes to the instance order[n], through the per-instance
// transport the Dependency built for it (instance breaker included).
type scripted struct {
	mu    sync.Mutex
	order []string
	insts map[string]http.RoundTripper
}

func (s *scripted) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	if len(s.order) == 0 {
		s.mu.Unlock()
		return nil, errNoInstances
	}
	id := s.order[0]
	s.order = s.order[1:]
	rt := s.insts[id]
	s.mu.Unlock()
	return rt.RoundTrip(req)
}

// telemetryScenario drives one Dependency ("pricing", instances a, b, c) through every kind of
// telemetry it emits, one call at a time:
//
//  1. a answers 503 with Retry-After: 1, the retry goes to b: retry status_5xx, backoff 1 s.
//  2. b answers 429, the retry goes to b: retry status_429.
//  3. b is slow, a hedge goes to c after 100 ms and wins (the budget's last token).
//  4. a answers 503 again: its breaker opens (2 failures); the retry is refused, the budget is empty.
//  5. a's breaker refuses (rejection breaker_open), the re-pick goes to b: retry breaker_open.
//  6. after the breaker delay a's probe succeeds: open -> half_open -> closed.
//
// call is invoked for each call with its number, and returns the context to send it with.
// afterCall, if set, runs after each call (inside the synctest bubble).
type telemetryScenario struct {
	opts      []Option
	call      func(n int) (context.Context, func())
	afterCall func(n int, d *Dependency, bal *scripted)
	end       func(d *Dependency, bal *scripted)
}

func (sc telemetryScenario) run(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Timeout, cfg.AttemptTimeout, cfg.PropagateDeadline = 0, 0, false
		cfg.Retries, cfg.RetryBaseDelay = 1, 0 // no jitter: the only wait is a Retry-After
		// 3 tokens (0.25/s × 12 s), none earned by calls: two retries and a hedge empty the budget.
		cfg.BudgetRatio, cfg.BudgetMinPerSecond, cfg.BudgetWindow = 0, 0.25, 12*time.Second
		cfg.HedgeDelay, cfg.MaxHedges = 100*time.Millisecond, 1
		cfg.BreakerFailures, cfg.BreakerDelay = 2, time.Second
		cfg.DependencyBreakerRate, cfg.DependencyBreakerMinCalls = 0.99, 1000 // present, never opens
		d, err := NewDependency("pricing", cfg, sc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		backends := map[string]*recorder{"a": newRecorder("a"), "b": newRecorder("b"), "c": newRecorder("c")}
		backends["a"].steps["a"] = []step{{status: 503, header: http.Header{"Retry-After": {"1"}}}, {status: 503}, {status: 200}}
		backends["b"].steps["b"] = []step{{status: 200}, {status: 429}, {status: 200}, {status: 200, delay: 500 * time.Millisecond}, {status: 200}}
		bal := &scripted{
			order: []string{"a", "b", "b", "b", "b", "c", "a", "a", "b", "a"},
			insts: map[string]http.RoundTripper{},
		}
		for id, be := range backends {
			bal.insts[id] = d.Instance(id, be)
		}
		rt := d.Wrap(bal)
		want := []int{200, 200, 200, 503, 200, 200}
		for n := 1; n <= len(want); n++ {
			if n == 6 {
				time.Sleep(1300 * time.Millisecond) // breaker delay 1 s ± 20%
			}
			ctx, done := context.Background(), func() {}
			if sc.call != nil {
				ctx, done = sc.call(n)
			}
			resp, err := get(t, ctx, rt, http.MethodGet, "")
			if err != nil {
				t.Fatalf("call %d: %v", n, err)
			}
			readClose(t, resp)
			done()
			if resp.StatusCode != want[n-1] {
				t.Fatalf("call %d: status %d, want %d", n, resp.StatusCode, want[n-1])
			}
			if sc.afterCall != nil {
				sc.afterCall(n, d, bal)
			}
		}
		if got := backends["c"].Calls(); len(got) != 1 {
			t.Fatalf("c answered %d attempts, want the one hedge", len(got))
		}
		if sc.end != nil {
			sc.end(d, bal)
		}
	})
}

// collect returns the resilience scope's metrics by name.
func collect(t *testing.T, r sdkmetric.Reader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != semconv.ScopeResilience {
			continue
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// points returns the int64 data points of m by their encoded attribute set ("k=v,k=v", sorted).
func points(t *testing.T, m metricdata.Metrics) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		if !d.IsMonotonic {
			t.Errorf("%s is not monotonic", m.Name)
		}
		for _, dp := range d.DataPoints {
			out[dp.Attributes.Encoded(attribute.DefaultEncoder())] = dp.Value
		}
	case metricdata.Gauge[int64]:
		for _, dp := range d.DataPoints {
			out[dp.Attributes.Encoded(attribute.DefaultEncoder())] = dp.Value
		}
	default:
		t.Fatalf("%s: unexpected data %T", m.Name, m.Data)
	}
	return out
}

// breakerPoints is what chassis.breaker.state reports for breakers in the given states.
func breakerPoints(states map[string]string) map[string]int64 {
	out := map[string]int64{}
	for inst, cur := range states {
		for _, st := range []string{semconv.BreakerClosed, semconv.BreakerOpen, semconv.BreakerHalfOpen} {
			v := int64(0)
			if st == cur {
				v = 1
			}
			out[fmt.Sprintf("chassis.breaker.instance=%s,chassis.breaker.state=%s,peer.service=pricing", inst, st)] = v
		}
	}
	return out
}

func assertPoints(t *testing.T, ms map[string]metricdata.Metrics, name, unit string, want map[string]int64) {
	t.Helper()
	m, ok := ms[name]
	if !ok {
		t.Errorf("%s: not emitted", name)
		return
	}
	if m.Unit != unit {
		t.Errorf("%s: unit %q, want %q", name, m.Unit, unit)
	}
	got := points(t, m)
	if !mapsEqual(got, want) {
		t.Errorf("%s:\n got %v\nwant %v", name, got, want)
	}
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestTelemetryMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	telemetryScenario{
		opts: []Option{WithMeterProvider(mp)},
		afterCall: func(n int, d *Dependency, _ *scripted) {
			ms := collect(t, reader)
			switch n {
			case 1:
				assertPoints(t, ms, semconv.MetricRetryBudgetTokens, semconv.UnitAttempt, map[string]int64{"peer.service=pricing": 2})
			case 5: // a's breaker is open
				assertPoints(t, ms, semconv.MetricBreakerState, semconv.UnitState,
					breakerPoints(map[string]string{"a": "open", "b": "closed", "c": "closed", "service": "closed"}))
			}
		},
		end: func(d *Dependency, bal *scripted) {
			ms := collect(t, reader)
			const peer = "peer.service=pricing"
			assertPoints(t, ms, semconv.MetricClientAttempts, semconv.UnitAttempt, map[string]int64{
				"chassis.attempt.kind=first," + peer: 6,
				"chassis.attempt.kind=retry," + peer: 3, // calls 1, 2 and 5; call 4's was refused
				"chassis.attempt.kind=hedge," + peer: 1,
			})
			assertPoints(t, ms, semconv.MetricRetryAttempts, semconv.UnitAttempt, map[string]int64{
				"chassis.retry.reason=status_5xx," + peer:   1,
				"chassis.retry.reason=status_429," + peer:   1,
				"chassis.retry.reason=breaker_open," + peer: 1,
			})
			assertPoints(t, ms, semconv.MetricHedgesSent, semconv.UnitRequest, map[string]int64{peer: 1})
			assertPoints(t, ms, semconv.MetricHedgesWon, semconv.UnitRequest, map[string]int64{peer: 1})
			assertPoints(t, ms, semconv.MetricClientRejections, semconv.UnitRequest, map[string]int64{
				"chassis.rejection.reason=budget_exhausted," + peer: 1,
				"chassis.rejection.reason=breaker_open," + peer:     1,
			})
			assertPoints(t, ms, semconv.MetricBreakerTransitions, semconv.UnitTransition, map[string]int64{
				"chassis.breaker.from=closed,chassis.breaker.to=open," + peer:      1,
				"chassis.breaker.from=open,chassis.breaker.to=half_open," + peer:   1,
				"chassis.breaker.from=half_open,chassis.breaker.to=closed," + peer: 1,
			})
			assertPoints(t, ms, semconv.MetricBreakerState, semconv.UnitState,
				breakerPoints(map[string]string{"a": "closed", "b": "closed", "c": "closed", "service": "closed"}))
			assertPoints(t, ms, semconv.MetricRetryBudgetTokens, semconv.UnitAttempt, map[string]int64{peer: 0})
			var names []string
			for n := range ms {
				names = append(names, n)
			}
			slices.Sort(names)
			wantNames := []string{semconv.MetricBreakerState, semconv.MetricBreakerTransitions, semconv.MetricClientAttempts,
				semconv.MetricHedgesSent, semconv.MetricHedgesWon, semconv.MetricClientRejections,
				semconv.MetricRetryAttempts, semconv.MetricRetryBudgetTokens}
			slices.Sort(wantNames)
			if !slices.Equal(names, wantNames) {
				t.Errorf("metrics emitted: %v, want %v", names, wantNames)
			}

			// c leaves: once its transport is collected, its breaker leaves the gauge and the registry.
			bal.mu.Lock()
			delete(bal.insts, "c")
			bal.mu.Unlock()
			for range 5 {
				runtime.GC()
			}
			assertPoints(t, collect(t, reader), semconv.MetricBreakerState, semconv.UnitState,
				breakerPoints(map[string]string{"a": "closed", "b": "closed", "service": "closed"}))
			d.tel.obs.mu.Lock()
			n := len(d.tel.obs.breakers)
			d.tel.obs.mu.Unlock()
			if n != 3 {
				t.Errorf("%d breakers registered after c was collected, want 3", n)
			}
			runtime.KeepAlive(bal) // a and b stay in the balancer: their breakers must stay reported
		},
	}.run(t)
}

// Without a reader nothing collects: registering breakers prunes the dead ones itself.
func TestBreakerRegistryBoundedWithoutReader(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DependencyBreakerRate = 0
	d, err := NewDependency("pricing", cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 64 {
		_ = d.Instance(fmt.Sprint(i), http.DefaultTransport)
	}
	for range 5 {
		runtime.GC()
	}
	keep := make([]http.RoundTripper, 0, 64)
	for i := range 64 {
		keep = append(keep, d.Instance(fmt.Sprint(i), http.DefaultTransport))
	}
	d.tel.obs.mu.Lock()
	n := len(d.tel.obs.breakers)
	d.tel.obs.mu.Unlock()
	if n != 64 {
		t.Fatalf("%d breakers registered for 64 live ones (64 collected)", n)
	}
	runtime.KeepAlive(keep)
}

func TestTelemetrySpanEvents(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	telemetryScenario{
		call: func(n int) (context.Context, func()) {
			ctx, span := tp.Tracer("test").Start(context.Background(), fmt.Sprint("call ", n))
			return ctx, func() { span.End() }
		},
	}.run(t)
	const (
		attempt, reason, backoff = semconv.AttrAttempt, semconv.AttrRetryReason, semconv.AttrBackoff
		from, to, instance       = semconv.AttrBreakerFrom, semconv.AttrBreakerTo, semconv.AttrInstance
	)
	want := map[string][]string{
		"call 1": {ev(semconv.EventRetry, attempt, "2", reason, semconv.ReasonStatus5xx, backoff, "1")},
		"call 2": {ev(semconv.EventRetry, attempt, "2", reason, semconv.ReasonStatus429, backoff, "0")},
		"call 3": {ev(semconv.EventHedge, attempt, "2"), ev(semconv.EventHedgeWon)},
		"call 4": { // a's second 503 opens its breaker
			ev(semconv.EventBreakerTransition, from, semconv.BreakerClosed, to, semconv.BreakerOpen, instance, "a"),
			ev(semconv.EventRejected, semconv.AttrRejectionReason, semconv.ReasonBudgetExhausted),
		},
		"call 5": {
			ev(semconv.EventRejected, semconv.AttrRejectionReason, semconv.ReasonBreakerOpen, instance, "a"),
			ev(semconv.EventRetry, attempt, "2", reason, semconv.ReasonBreakerOpen, backoff, "0"),
		},
		"call 6": { // the probe: the permit half-opens the breaker, the success closes it
			ev(semconv.EventBreakerTransition, from, semconv.BreakerOpen, to, semconv.BreakerHalfOpen, instance, "a"),
			ev(semconv.EventBreakerTransition, from, semconv.BreakerHalfOpen, to, semconv.BreakerClosed, instance, "a"),
		},
	}
	spans := sr.Ended()
	if len(spans) != len(want) {
		t.Fatalf("%d spans, want %d", len(spans), len(want))
	}
	for _, s := range spans {
		var got []string
		for _, ev := range s.Events() {
			kvs := make([]string, 0, len(ev.Attributes))
			for _, kv := range ev.Attributes {
				kvs = append(kvs, string(kv.Key)+"="+kv.Value.Emit())
			}
			got = append(got, ev.Name+"{"+strings.Join(kvs, " ")+"}")
		}
		if !slices.Equal(got, want[s.Name()]) {
			t.Errorf("%s: events\n got %q\nwant %q", s.Name(), got, want[s.Name()])
		}
	}
}

// Recording allocates nothing when the caller's span is not recording.
func TestTelemetryRecordingAllocates0(t *testing.T) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	tel := newOptions([]Option{WithMeterProvider(mp), withDependency("pricing")}).instruments()
	ctx := trace.ContextWithSpan(context.Background(), trace.SpanFromContext(context.Background()))
	n := testing.AllocsPerRun(100, func() {
		tel.attempt(ctx, attemptRetry)
		tel.retry(ctx, semconv.ReasonStatus5xx, 2, time.Millisecond)
		tel.hedge(ctx, 2)
		tel.hedgeWon(ctx)
		tel.reject(ctx, semconv.ReasonBreakerOpen, "a")
		tel.breakerTransition(breakerStates[0], breakerStates[1])
	})
	if n != 0 {
		t.Fatalf("recording allocates %v times", n)
	}
}

// resilience and discovery/lb both count into chassis.client.rejections; the Prometheus exporter
// merges the two scopes' series only when unit and description agree.
func TestRejectionsMetadataSharedWithLB(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	bal, err := lb.NewFixed("pricing", nil, lb.WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	if _, err := bal.Pick(context.Background()); err == nil {
		t.Fatal("pick from an empty balancer succeeded")
	}
	newOptions([]Option{WithMeterProvider(mp)}).instruments().reject(context.Background(), semconv.ReasonBulkheadFull, "")
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == semconv.MetricClientRejections {
				meta[sm.Scope.Name] = m.Unit + " " + m.Description
			}
		}
	}
	if len(meta) != 2 || meta[semconv.ScopeLB] != meta[semconv.ScopeResilience] {
		t.Fatalf("%s by scope: %q", semconv.MetricClientRejections, meta)
	}
}
