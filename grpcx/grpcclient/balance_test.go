package grpcclient_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/discoverytest"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
	"github.com/cloudchassis/kit/telemetry"
	"github.com/cloudchassis/kit/telemetry/semconv"
	"github.com/cloudchassis/kit/telemetry/telemetrytest"
)

// load runs calls from workers goroutines until stop is closed and returns the calls made and
// the ones that failed.
func load(ctx context.Context, c *grpcclient.Client, workers int, stop <-chan struct{}, onErr func(error)) (total, failed int64) {
	var wg sync.WaitGroup
	var n, f atomic.Int64
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				n.Add(1)
				if err := check(ctx, c); err != nil {
					f.Add(1)
					onErr(err)
				}
			}
		})
	}
	wg.Wait()
	return n.Load(), f.Load()
}

func TestP2CSendsLessToSlowInstance(t *testing.T) {
	bs := startBackends(t, 3)
	bs[0].set(func(context.Context) error { time.Sleep(100 * time.Millisecond); return nil })
	reg := discoverytest.NewRegistry()
	register(reg, bs...)
	c := newClient(t, reg)
	stop := make(chan struct{})
	time.AfterFunc(time.Second, func() { close(stop) })
	total, failed := load(ctxT(t), c, 4, stop, func(err error) { t.Error(err) })
	got := calls(bs...)
	if failed > 0 || total == 0 {
		t.Fatalf("%d of %d calls failed", failed, total)
	}
	// Round robin would give each a third; peak-EWMA sends the slow one a fraction of a fast one's
	// share (the test machine may be loaded: the bound is relative).
	if got[0]*2 >= min(got[1], got[2]) {
		t.Fatalf("the slow instance got %d calls, the fast ones %d and %d; P2C peak-EWMA should avoid it", got[0], got[1], got[2])
	}
}

func TestKilledInstanceLosesNoIdempotentCall(t *testing.T) {
	c, bs, _ := setup(t, 3, grpcclient.WithIdempotent(checkMethod))
	stop := make(chan struct{})
	time.AfterFunc(300*time.Millisecond, func() { bs[0].srv.Stop() }) // abrupt: connections cut, RPCs in flight fail
	time.AfterFunc(time.Second, func() { close(stop) })
	total, failed := load(ctxT(t), c, 8, stop, func(err error) { t.Error(err) })
	if failed > 0 {
		t.Fatalf("%d of %d idempotent calls failed when one of 3 instances was killed", failed, total)
	}
	before := bs[0].calls.Load()
	checkN(t, ctxT(t), c, 50)
	if bs[0].calls.Load() != before {
		t.Fatal("the killed instance still gets calls")
	}
}

func TestStreamsAreBalancedAndInstrumented(t *testing.T) {
	c, bs, _ := setup(t, 2)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	for range 8 {
		ws, err := healthpb.NewHealthClient(c.Conn()).Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ws.Recv()
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("Watch: %v %v", resp, err)
		}
	}
	// Open streams are calls in flight to P2C: they spread over both instances.
	if a, b := bs[0].streams.Load(), bs[1].streams.Load(); a+b != 8 || a == 0 || b == 0 {
		t.Fatalf("8 streams went %d and %d", a, b)
	}
}

// TestSlowFirstConnectionIsNotSent: an instance that accepts TCP connections but never speaks gRPC
// stays CONNECTING; an attempt sent its way waits for it, times out, and goes to another instance
// even for a method that is not idempotent, since nothing was sent.
func TestSlowFirstConnectionIsNotSent(t *testing.T) {
	port := muteListener(t)
	good := startBackend(t, "good")
	mute := discovery.Instance{ID: "mute", Address: "127.0.0.1", Port: port}
	reg := discoverytest.NewRegistry()
	reg.Set("svc", mute, good.instance())
	cfg := quick()
	cfg.AttemptTimeout = 200 * time.Millisecond
	c := newClient(t, reg, grpcclient.WithResilience(cfg), grpcclient.WithBalancer(lb.WithPolicy(lb.RoundRobin)))
	checkN(t, ctxT(t), c, 4) // Check is not declared idempotent
	if good.calls.Load() != 4 {
		t.Fatalf("the connected instance served %d of 4 calls", good.calls.Load())
	}
}

// A caller that cancels a stream's context and drops it, without reading it to its end, still ends
// the call: rpc.client.call.duration counts it with CANCELLED.
func TestDroppedStreamIsRecorded(t *testing.T) {
	tel, rec := telemetrytest.New(t, telemetry.Settings{ServiceName: "caller"})
	reg := discoverytest.NewRegistry()
	register(reg, startBackend(t, "b0"))
	c := newClient(t, reg, grpcclient.WithMeterProvider(tel.MeterProvider()), grpcclient.WithTracerProvider(tel.TracerProvider()))
	ctx, cancel := context.WithCancel(ctxT(t))
	ws, err := healthpb.NewHealthClient(c.Conn()).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel() // and never read again
	var n uint64
	for deadline := time.Now().Add(5 * time.Second); n == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		n = rec.HistogramCount(t, grpcclient.MetricCallDuration, attribute.String(semconv.AttrRPCMethod, "Watch"),
			attribute.Int(semconv.AttrRPCGRPCStatusCode, int(codes.Canceled)))
	}
	if n != 1 {
		t.Fatalf("dropped stream recorded %d times with CANCELLED, want 1", n)
	}
}
