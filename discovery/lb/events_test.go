package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// fakeInstances answers by instance address: each answer takes delay[i] (a sleep: run under
// synctest) and has status[i] (0: 200; -1: a transport error).
type fakeInstances struct {
	insts  []discovery.Instance
	delay  []time.Duration
	status []int
}

func (f *fakeInstances) RoundTrip(req *http.Request) (*http.Response, error) {
	for i, inst := range f.insts {
		if inst.HostPort() != req.URL.Host {
			continue
		}
		select {
		case <-time.After(f.delay[i]):
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
		switch f.status[i] {
		case -1:
			return nil, errors.New("connection reset")
		case 0:
			return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(inst.ID))}, nil
		default:
			return &http.Response{StatusCode: f.status[i], Body: http.NoBody}, nil
		}
	}
	return nil, fmt.Errorf("no instance at %s", req.URL.Host)
}

// spanCalls sends calls through a Transport, each under its own recorded span.
type spanCalls struct {
	sr *tracetest.SpanRecorder
	tp *sdktrace.TracerProvider
	rt http.RoundTripper
	n  int
}

func newSpanCalls(rt http.RoundTripper) *spanCalls {
	sr := tracetest.NewSpanRecorder()
	return &spanCalls{sr: sr, tp: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr)), rt: rt}
}

// call sends one GET and returns its span's events as "name{k=v ...}".
func (c *spanCalls) call(t *testing.T) []string {
	t.Helper()
	c.n++
	ctx, span := c.tp.Tracer("test").Start(context.Background(), fmt.Sprint("call ", c.n))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://svc/x", nil)
	if resp, err := c.rt.RoundTrip(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	span.End()
	spans := c.sr.Ended()
	var out []string
	for _, ev := range spans[len(spans)-1].Events() {
		kvs := make([]string, 0, len(ev.Attributes))
		for _, kv := range ev.Attributes {
			kvs = append(kvs, string(kv.Key)+"="+kv.Value.Emit())
		}
		out = append(out, ev.Name+"{"+strings.Join(kvs, " ")+"}")
	}
	return out
}

func ejectionEv(reason, instance string) string {
	return semconv.EventEjection + "{" + semconv.AttrEjectionReason + "=" + reason + " " + semconv.AttrInstance + "=" + instance + "}"
}

// Each ejection shows on the span of the call whose outcome caused it, and on no other.
func TestSpanEventEjection(t *testing.T) {
	for _, tc := range []struct {
		reason  string
		outlier Outlier
		fast    bool // the bad instance answers at once (failures); else it is slow (latency)
		nth     int  // the call to the bad instance that ejects it
	}{
		{semconv.ReasonConsecutiveError, Outlier{ConsecutiveFailures: 3, BaseEjectionTime: time.Minute, MaxEjectionPercent: 50}, true, 3},
		{semconv.ReasonSuccessRate, Outlier{FailurePercent: 50, MinRequests: 4, Interval: time.Minute, BaseEjectionTime: time.Minute, MaxEjectionPercent: 50}, true, 4},
		// Latency: the median is first computed one latencyRefresh in (about the 2nd round), then
		// two slow calls in a row eject.
		{semconv.ReasonLatency, Outlier{LatencyFactor: 5, LatencyMin: 50 * time.Millisecond, ConsecutiveSlow: 2, BaseEjectionTime: time.Minute, MaxEjectionPercent: 50}, false, 0},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				insts := instances(4)
				f := &fakeInstances{insts: insts, delay: make([]time.Duration, 4), status: make([]int, 4)}
				for i := range f.delay {
					f.delay[i] = 10 * time.Millisecond
				}
				if tc.fast {
					f.status[3] = 503
				} else {
					f.delay[3] = 600 * time.Millisecond
				}
				b := mustFixed(t, insts, WithPolicy(RoundRobin), WithOutlier(tc.outlier), WithBaseTransport(f))
				c := newSpanCalls(NewTransport(b))
				badCalls, ejectedAt := 0, 0
				for n := 1; n <= 40 && ejectedAt == 0; n++ {
					events := c.call(t)
					if n%4 == 0 { // round robin: every 4th call goes to i3
						badCalls++
					}
					switch {
					case len(events) == 0:
					case n%4 == 0 && len(events) == 1 && events[0] == ejectionEv(tc.reason, "i3"):
						ejectedAt = badCalls
					default:
						t.Fatalf("call %d: events %q", n, events)
					}
				}
				if ejectedAt == 0 || !ejectedIDs(b)["i3"] {
					t.Fatalf("i3 not ejected for %s (ejected: %v)", tc.reason, ejectedIDs(b))
				}
				if tc.nth != 0 && ejectedAt != tc.nth {
					t.Fatalf("ejected at i3's call %d, want %d", ejectedAt, tc.nth)
				}
				for range 8 { // i3 is out: nothing more happens
					if events := c.call(t); len(events) != 0 {
						t.Fatalf("after the ejection: events %q", events)
					}
				}
			})
		})
	}
}

// A pick that finds nothing is a rejection on the call's span.
func TestSpanEventRejectedNoInstances(t *testing.T) {
	b := mustFixed(t, nil)
	c := newSpanCalls(NewTransport(b))
	want := semconv.EventRejected + "{" + semconv.AttrRejectionReason + "=" + semconv.ReasonNoInstances + "}"
	if events := c.call(t); len(events) != 1 || events[0] != want {
		t.Fatalf("events %q, want %q", events, want)
	}
}

// Latency ejection is relative and needs enough instances: an instance is ejected for being much
// slower than the median, never when all are slow, and not with fewer than latencyMinInstances
// estimates. Failed calls do not count.
func TestLatencyEjection(t *testing.T) {
	cfg := DefaultOutlier()
	cfg.ConsecutiveFailures, cfg.FailurePercent = 0, 0 // latency alone
	cfg.LatencyFactor, cfg.ConsecutiveSlow = 5, 3
	run := func(t *testing.T, delays []time.Duration, status []int, calls int) (*Balancer, int64) {
		reader := sdkmetric.NewManualReader()
		insts := instances(len(delays))
		f := &fakeInstances{insts: insts, delay: delays, status: status}
		b := mustFixed(t, insts, WithPolicy(RoundRobin), WithOutlier(cfg), WithBaseTransport(f),
			WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))))
		rt := NewTransport(b)
		for range calls {
			req, _ := http.NewRequest(http.MethodGet, "http://svc/x", nil)
			if resp, err := rt.RoundTrip(req); err == nil {
				resp.Body.Close()
			}
		}
		return b, counterSum(t, reader, semconv.MetricLBEjections, semconv.ReasonLatency)
	}
	ms := time.Millisecond
	t.Run("one slow instance", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, ej := run(t, []time.Duration{10 * ms, 12 * ms, 8 * ms, 400 * ms}, make([]int, 4), 40)
			if got := ejectedIDs(b); len(got) != 1 || !got["i3"] {
				t.Fatalf("ejected %v, want i3", got)
			}
			if ej != 1 {
				t.Fatalf("%d latency ejections counted, want 1", ej)
			}
		})
	})
	t.Run("slow but under LatencyMin", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, _ := run(t, []time.Duration{ms, ms, ms, 60 * ms}, make([]int, 4), 40) // 60× the median, < 100 ms
			if got := ejectedIDs(b); len(got) != 0 {
				t.Fatalf("ejected %v, want none", got)
			}
		})
	})
	t.Run("all slow", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, _ := run(t, []time.Duration{400 * ms, 450 * ms, 500 * ms, 2000 * ms}, make([]int, 4), 40) // i3 is 4.4× the median
			if got := ejectedIDs(b); len(got) != 0 {
				t.Fatalf("ejected %v, want none", got)
			}
		})
	})
	t.Run("too few instances", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, _ := run(t, []time.Duration{10 * ms, 400 * ms}, make([]int, 2), 40)
			if got := ejectedIDs(b); len(got) != 0 {
				t.Fatalf("ejected %v, want none", got)
			}
		})
	})
	t.Run("slow failures do not count", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b, _ := run(t, []time.Duration{10 * ms, 10 * ms, 10 * ms, 400 * ms}, []int{0, 0, 0, 503}, 40)
			if got := ejectedIDs(b); len(got) != 0 {
				t.Fatalf("ejected %v, want none (failures are the failure criteria's business)", got)
			}
		})
	})
}

func TestLatencyOutlierValidation(t *testing.T) {
	for _, c := range []Outlier{
		{LatencyFactor: 1, ConsecutiveSlow: 3, BaseEjectionTime: time.Second, MaxEjectionPercent: 10},
		{LatencyFactor: -2, BaseEjectionTime: time.Second},
		{LatencyFactor: 3, ConsecutiveSlow: -1, BaseEjectionTime: time.Second},
		{LatencyFactor: 3, ConsecutiveSlow: 1, LatencyMin: -time.Second, BaseEjectionTime: time.Second},
	} {
		if _, err := NewFixed("svc", nil, WithOutlier(c)); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
}
