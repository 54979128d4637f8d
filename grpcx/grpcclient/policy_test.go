package grpcclient_test

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/discoverytest"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
	"github.com/cloudchassis/kit/resilience"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

func unavailable(context.Context) error { return status.Error(codes.Unavailable, "down") }

// failing returns the index of the backend that got the first call, after making it fail.
func twoBackendsOneFailing(t *testing.T, opts ...grpcclient.Option) (*grpcclient.Client, []*backend) {
	bs := startBackends(t, 2)
	bs[0].set(unavailable)
	reg := discoverytest.NewRegistry()
	register(reg, bs...)
	return newClient(t, reg, opts...), bs
}

func TestRetryOnUnavailableReachesAnotherInstance(t *testing.T) {
	c, bs := twoBackendsOneFailing(t, grpcclient.WithIdempotent(checkMethod),
		grpcclient.WithResilience(quick()), grpcclient.WithBalancer(lb.WithOutlier(lb.Outlier{})))
	ctx := ctxT(t)
	for i := range 30 {
		if err := check(ctx, c); err != nil {
			t.Fatalf("call %d: %v (calls %v)", i, err, calls(bs...))
		}
	}
	if bs[0].calls.Load() == 0 {
		t.Fatal("the failing instance was never tried: the test proves nothing")
	}
}

func TestNonIdempotentNotRetried(t *testing.T) {
	c, bs := twoBackendsOneFailing(t, grpcclient.WithResilience(quick()), grpcclient.WithBalancer(lb.WithOutlier(lb.Outlier{})))
	ctx := ctxT(t)
	var failed int
	for range 30 {
		if err := check(ctx, c); err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("error %v, want the instance's UNAVAILABLE", err)
			}
			failed++
		}
	}
	if got := calls(bs...); failed == 0 || int64(failed) != got[0] || got[0]+got[1] != 30 {
		t.Fatalf("failed %d, calls %v: every call must be sent exactly once", failed, got)
	}
	// Marked by the caller, the same method is retried.
	for range 10 {
		if err := check(resilience.MarkRetryable(ctx), c); err != nil {
			t.Fatalf("marked retryable: %v", err)
		}
	}
}

func TestBudgetExhaustedStopsRetries(t *testing.T) {
	cfg := quick()
	cfg.BudgetRatio, cfg.BudgetMinPerSecond = 0, 0.0001 // no token after the first
	cfg.Retries = 5
	bs := startBackends(t, 3)
	for _, b := range bs {
		b.set(unavailable)
	}
	reg := discoverytest.NewRegistry()
	register(reg, bs...)
	cfg.BreakerFailures = 0
	cfg.DependencyBreakerRate = 0
	c := newClient(t, reg, grpcclient.WithIdempotent(checkMethod), grpcclient.WithResilience(cfg),
		grpcclient.WithBalancer(lb.WithOutlier(lb.Outlier{})))
	ctx := ctxT(t)
	for range 5 {
		err := check(ctx, c)
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("err %v, want UNAVAILABLE", err)
		}
	}
	total := calls(bs...)
	if sent := total[0] + total[1] + total[2]; sent != 5 {
		t.Fatalf("%d attempts for 5 calls with an empty budget, want 5: retries were not refused", sent)
	}
}

func TestDependencyBreakerOpens(t *testing.T) {
	cfg := quick()
	cfg.Retries = 0
	cfg.DependencyBreakerMinCalls = 5
	cfg.BreakerFailures = 0
	bs := startBackends(t, 1)
	bs[0].set(func(context.Context) error { return status.Error(codes.Internal, "bug") })
	reg := discoverytest.NewRegistry()
	register(reg, bs...)
	c := newClient(t, reg, grpcclient.WithResilience(cfg), grpcclient.WithBalancer(lb.WithOutlier(lb.Outlier{})))
	ctx := ctxT(t)
	for range 10 {
		_ = check(ctx, c)
	}
	err := check(ctx, c)
	if !errors.Is(err, resilience.ErrBreakerOpen) || status.Code(err) != codes.Unavailable {
		t.Fatalf("after 10 INTERNAL: %v, want an open breaker as UNAVAILABLE", err)
	}
	if n := bs[0].calls.Load(); n > 6 {
		t.Fatalf("%d calls reached the instance; the breaker should have opened after 5", n)
	}
}

func TestInstanceBreakerTakesInstanceOutOfRotation(t *testing.T) {
	cfg := quick()
	cfg.Retries = 0
	cfg.DependencyBreakerRate = 0
	c, bs := twoBackendsOneFailing(t, grpcclient.WithResilience(cfg),
		grpcclient.WithBalancer(lb.WithOutlier(lb.Outlier{}), lb.WithPolicy(lb.RoundRobin)))
	ctx := ctxT(t)
	for range 100 {
		_ = check(ctx, c)
	}
	if n := bs[0].calls.Load(); n != int64(cfg.BreakerFailures) {
		t.Fatalf("the failing instance got %d calls, want %d (its breaker opens after them)", n, cfg.BreakerFailures)
	}
}

func TestPushbackHonoured(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fail  func(ctx context.Context) error
		retry bool
	}{
		{"trailer", func(ctx context.Context) error {
			_ = grpc.SetTrailer(ctx, metadata.Pairs(grpcclient.PushbackTrailer, "1000"))
			return status.Error(codes.ResourceExhausted, "slow down")
		}, true},
		{"retry-info", func(context.Context) error {
			st, _ := status.New(codes.ResourceExhausted, "slow down").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)})
			return st.Err()
		}, true},
		{"negative means never", func(ctx context.Context) error {
			_ = grpc.SetTrailer(ctx, metadata.Pairs(grpcclient.PushbackTrailer, "-1"))
			return status.Error(codes.ResourceExhausted, "go away")
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs := startBackends(t, 1)
			var first atomic.Bool
			bs[0].set(func(ctx context.Context) error {
				if first.CompareAndSwap(false, true) {
					return tc.fail(ctx)
				}
				return nil
			})
			reg := discoverytest.NewRegistry()
			register(reg, bs...)
			c := newClient(t, reg, grpcclient.WithIdempotent(checkMethod), grpcclient.WithResilience(quick()))
			start := time.Now()
			err := check(ctxT(t), c)
			took := time.Since(start)
			if !tc.retry {
				if status.Code(err) != codes.ResourceExhausted || bs[0].calls.Load() != 1 {
					t.Fatalf("err %v after %d calls: a negative pushback must end the retries", err, bs[0].calls.Load())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if took < 900*time.Millisecond {
				t.Fatalf("retried after %v, before the 1s pushback", took)
			}
		})
	}
}

func TestHedgingForIdempotentOnly(t *testing.T) {
	cfg := quick()
	cfg.HedgeDelay = 20 * time.Millisecond
	cfg.AttemptTimeout = 0
	bs := startBackends(t, 2)
	slow := func(ctx context.Context) error {
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
		}
		return nil
	}
	bs[0].set(slow)
	bs[1].set(slow)
	reg := discoverytest.NewRegistry()
	register(reg, bs...)
	var hedged sync.Map
	c := newClient(t, reg, grpcclient.WithResilience(cfg), grpcclient.WithIdempotent(checkMethod),
		grpcclient.WithInterceptors(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			id, _ := grpcclient.Instance(ctx)
			hedged.Store(id, true)
			if id == "b1" {
				bs[1].set(nil) // the hedge answers at once
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}, nil))
	start := time.Now()
	if err := check(ctxT(t), c); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Fatalf("hedged call took %v: the hedge to the other instance did not win", took)
	}
	// A method not declared idempotent is never hedged: it waits for the slow instance.
	bs[0].set(slow)
	bs[1].set(slow)
	before := calls(bs...)
	c2 := newClient(t, reg, grpcclient.WithResilience(cfg))
	ctx, cancel := context.WithTimeout(ctxT(t), 200*time.Millisecond)
	defer cancel()
	_ = check(ctx, c2)
	after := calls(bs...)
	if sent := after[0] + after[1] - before[0] - before[1]; sent != 1 {
		t.Fatalf("%d attempts for a non-idempotent call with hedging on, want 1", sent)
	}
}

func TestRequestIDAndDeadlinePropagate(t *testing.T) {
	c, bs, _ := setup(t, 1, grpcclient.WithRequestID(func(context.Context) string { return "req-42" }))
	ctx, cancel := context.WithTimeout(t.Context(), 800*time.Millisecond)
	defer cancel()
	if err := check(ctx, c); err != nil {
		t.Fatal(err)
	}
	md := *bs[0].last.Load()
	if got := md.Get(grpcclient.RequestIDKey); len(got) != 1 || got[0] != "req-42" {
		t.Fatalf("x-request-id %q, want req-42", got)
	}
	if dl := time.Duration(bs[0].dl.Load()); dl <= 0 || dl > 800*time.Millisecond {
		t.Fatalf("server saw deadline %v, want the caller's (<= 800ms)", dl)
	}
	// The caller's own request id wins.
	if err := check(metadata.AppendToOutgoingContext(ctx, grpcclient.RequestIDKey, "mine"), c); err != nil {
		t.Fatal(err)
	}
	if got := (*bs[0].last.Load()).Get(grpcclient.RequestIDKey); len(got) != 1 || got[0] != "mine" {
		t.Fatalf("x-request-id %q, want the caller's", got)
	}
	// Without a caller deadline, the attempt timeout (2s by default) bounds the call at the server.
	if err := check(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	if dl := time.Duration(bs[0].dl.Load()); dl <= 0 || dl > 2*time.Second {
		t.Fatalf("server saw deadline %v, want the attempt timeout", dl)
	}
}

func TestNotSentRetriedForAnyMethod(t *testing.T) {
	bs := startBackends(t, 2)
	reg := discoverytest.NewRegistry()
	register(reg, bs...)
	c := newClient(t, reg, grpcclient.WithResilience(quick()), grpcclient.WithBalancer(lb.WithOutlier(lb.Outlier{})),
		grpcclient.WithInterceptors(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if id, _ := grpcclient.Instance(ctx); id == "b0" {
				return grpcclient.NotSent(status.Error(codes.Unavailable, "no route"))
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		}, nil))
	for i := range 20 {
		if err := check(ctxT(t), c); err != nil { // Check is not declared idempotent
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if bs[0].calls.Load() != 0 || bs[1].calls.Load() != 20 {
		t.Fatalf("calls %v", calls(bs...))
	}
}

func TestRetryOnAndClassifierApply(t *testing.T) {
	internal := func(context.Context) error { return status.Error(codes.Internal, "bug") }
	t.Run("RETRY_ON=504 leaves UNAVAILABLE alone", func(t *testing.T) {
		cfg := quick()
		cfg.RetryOn = "504"
		c, bs := twoBackendsOneFailing(t, grpcclient.WithIdempotent(checkMethod), grpcclient.WithResilience(cfg),
			grpcclient.WithBalancer(lb.WithOutlier(lb.Outlier{}), lb.WithPolicy(lb.RoundRobin)))
		var failed int
		for range 10 {
			if err := check(ctxT(t), c); err != nil {
				t.Log(err)
				failed++
			}
		}
		if failed == 0 || int64(failed) != bs[0].calls.Load() {
			t.Fatalf("%d failed, calls %v: UNAVAILABLE must not be retried", failed, calls(bs...))
		}
	})
	t.Run("a classifier retries INTERNAL", func(t *testing.T) {
		bs := startBackends(t, 2)
		bs[0].set(internal)
		reg := discoverytest.NewRegistry()
		register(reg, bs...)
		c := newClient(t, reg, grpcclient.WithIdempotent(checkMethod),
			grpcclient.WithResilience(quick()), grpcclient.WithClassifier(func(resp *http.Response, err error) discovery.Class {
				if grpcclient.Code(resp, err) == codes.Internal {
					return discovery.Class{Retryable: true, Failure: true}
				}
				return discovery.Classify(resp, err)
			}),
			grpcclient.WithBalancer(lb.WithOutlier(lb.Outlier{}), lb.WithPolicy(lb.RoundRobin)))
		checkN(t, ctxT(t), c, 10)
		if bs[0].calls.Load() == 0 {
			t.Fatal("the failing instance was never tried")
		}
	})
	t.Run("by default INTERNAL is not retried", func(t *testing.T) {
		bs := startBackends(t, 1)
		bs[0].set(internal)
		reg := discoverytest.NewRegistry()
		register(reg, bs...)
		c := newClient(t, reg, grpcclient.WithIdempotent(checkMethod), grpcclient.WithResilience(quick()))
		if err := check(ctxT(t), c); status.Code(err) != codes.Internal || bs[0].calls.Load() != 1 {
			t.Fatalf("err %v after %d calls, want INTERNAL after 1", err, bs[0].calls.Load())
		}
	})
}

func TestHTTPStatusTable(t *testing.T) {
	for code, want := range map[codes.Code]int{codes.OK: 200, codes.Unavailable: 503, codes.DeadlineExceeded: 504,
		codes.ResourceExhausted: 429, codes.Internal: 500, codes.Unknown: 500, codes.Unimplemented: 501,
		codes.Canceled: 499, codes.NotFound: 404, codes.Code(99): 500} {
		if got := grpcclient.HTTPStatus(code); got != want {
			t.Errorf("HTTPStatus(%v) = %d, want %d", code, got, want)
		}
	}
}

func TestHeaderAndTrailerReachTheCaller(t *testing.T) {
	cfg := quick()
	cfg.HedgeDelay = time.Millisecond // hedged: attempts must not share the caller's metadata
	bs := startBackends(t, 2)
	for _, b := range bs {
		b.set(func(ctx context.Context) error {
			time.Sleep(5 * time.Millisecond)
			_ = grpc.SetHeader(ctx, metadata.Pairs("h", "1"))
			_ = grpc.SetTrailer(ctx, metadata.Pairs("t", "2"))
			return nil
		})
	}
	reg := discoverytest.NewRegistry()
	register(reg, bs...)
	c := newClient(t, reg, grpcclient.WithResilience(cfg), grpcclient.WithIdempotent(checkMethod))
	for range 10 {
		var h, tr metadata.MD
		if err := check(ctxT(t), c, grpc.Header(&h), grpc.Trailer(&tr)); err != nil {
			t.Fatal(err)
		}
		if h.Get("h")[0] != "1" || tr.Get("t")[0] != "2" {
			t.Fatalf("header %v, trailer %v", h, tr)
		}
	}
}

func TestOutlierEjection(t *testing.T) {
	cfg := quick()
	cfg.Retries, cfg.BreakerFailures, cfg.DependencyBreakerRate = 0, 0, 0 // ejection alone
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	c, bs := twoBackendsOneFailing(t, grpcclient.WithResilience(cfg), grpcclient.WithMeterProvider(mp),
		grpcclient.WithBalancer(lb.WithPolicy(lb.RoundRobin)))
	for range 40 {
		_ = check(ctxT(t), c)
	}
	if n := bs[0].calls.Load(); n != 5 {
		t.Fatalf("the failing instance got %d calls, want 5 (ejected after 5 consecutive UNAVAILABLE)", n)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var ejections int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == semconv.MetricLBEjections {
				for _, dp := range sum.DataPoints {
					ejections += dp.Value
				}
			}
		}
	}
	if ejections != 1 {
		t.Fatalf("%s = %d, want 1", semconv.MetricLBEjections, ejections)
	}
}
