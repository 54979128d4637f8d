package grpcclient_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/discoverytest"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
)

func TestCallsSpreadOverInstances(t *testing.T) {
	c, bs, _ := setup(t, 3)
	ctx := ctxT(t)
	checkN(t, ctx, c, 60)
	for i, n := range calls(bs...) {
		if n == 0 {
			t.Errorf("backend %d got no call: %v", i, calls(bs...))
		}
	}
}

func TestResolverFollowsDiscovery(t *testing.T) {
	bs := startBackends(t, 3)
	reg := discoverytest.NewRegistry()
	register(reg, bs[0])
	c := newClient(t, reg)
	ctx := ctxT(t)
	checkN(t, ctx, c, 10)
	if got := calls(bs...); got[0] != 10 || got[1]+got[2] != 0 {
		t.Fatalf("calls with one instance registered: %v", got)
	}
	register(reg, bs[1], bs[2]) // b0 leaves, two arrive
	deadline := time.Now().Add(5 * time.Second)
	for {
		before := calls(bs...)
		checkN(t, ctx, c, 20)
		after := calls(bs...)
		if after[0] == before[0] && after[1] > before[1] && after[2] > before[2] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls do not follow the new instance set: %v -> %v", before, after)
		}
	}
}

func TestLastKnownGoodKeptOnRegistryOutage(t *testing.T) {
	c, bs, reg := setup(t, 2)
	ctx := ctxT(t)
	if err := check(ctx, c); err != nil {
		t.Fatal(err)
	}
	reg.Fail("svc", errors.New("registry down"))
	time.Sleep(50 * time.Millisecond)
	for range 20 {
		if err := check(ctx, c); err != nil {
			t.Fatalf("call during a registry outage: %v", err)
		}
	}
	if got := calls(bs...); got[0] == 0 || got[1] == 0 {
		t.Fatalf("both instances of the last known list should serve: %v", got)
	}
}

func TestCallBeforeStartWaitsWithinDeadline(t *testing.T) {
	reg := discoverytest.NewRegistry()
	c, err := grpcclient.New("svc", reg.Watcher("svc"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := check(ctx, c); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("call before Start: %v, want DEADLINE_EXCEEDED", err)
	}
}

func TestNoInstancesIsUnavailable(t *testing.T) {
	reg := discoverytest.NewRegistry()
	reg.Set("svc")
	c := newClient(t, reg)
	err := check(ctxT(t), c)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("call to an empty service: %v, want UNAVAILABLE", err)
	}
}

// An instance that accepts connections but never completes the HTTP/2 handshake stays CONNECTING;
// a call without a deadline of its own waits for it no longer than the overall timeout
// (CLIENT_<NAME>_TIMEOUT), and so does opening a stream.
func TestWaitingForAConnectionIsBoundedByTheTimeout(t *testing.T) {
	port := muteListener(t)
	reg := discoverytest.NewRegistry()
	reg.Set("svc", discovery.Instance{ID: "mute", Address: "127.0.0.1", Port: port})
	cfg := quick()
	cfg.Timeout = 300 * time.Millisecond
	c := newClient(t, reg, grpcclient.WithResilience(cfg))
	start := time.Now()
	err := check(context.Background(), c)
	if code := status.Code(err); code != codes.DeadlineExceeded && code != codes.Unavailable {
		t.Fatalf("call to a mute instance: %v, want DEADLINE_EXCEEDED or UNAVAILABLE", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the call waited %v for a connection, beyond the 300ms timeout", d)
	}
	start = time.Now()
	ws, err := healthpb.NewHealthClient(c.Conn()).Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = ws.Recv()
	}
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("stream to a mute instance: %v after %v", err, time.Since(start))
	}
}
