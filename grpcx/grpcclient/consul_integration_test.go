package grpcclient_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/discovery/consul"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
	"github.com/cloudchassis/kit/internal/consultest"
)

// TestConsulDeregisterUnderLoad runs against a real Consul agent (scripts/install-consul.sh): three
// plain grpc-go servers registered with their gRPC port in the grpc_port meta (their registered
// port is a dummy HTTP port), a client under steady load over the registry's blocking-query watch;
// one instance deregisters, drains and stops. No call fails.
func TestConsulDeregisterUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test against a real consul agent; skipped with -short")
	}
	agent := consultest.StartDev(t)
	ac, err := api.NewClient(&api.Config{Address: agent.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	cc := consul.NewClient(ac)
	bs := startBackends(t, 3)
	regs := make([]*consul.Registrar, len(bs))
	for i, b := range bs {
		regs[i], err = consul.NewRegistrar(cc, consul.Registration{Name: "pricing", ID: b.name, Address: "127.0.0.1",
			Port: 1 + i, Meta: map[string]string{grpcclient.MetaPort: strconv.Itoa(b.port)}, TTL: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := regs[i].Register(t.Context()); err != nil {
			t.Fatal(err)
		}
		r := regs[i]
		t.Cleanup(func() { _ = r.Deregister(context.Background()) })
	}
	reg, err := consul.NewRegistry(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	w, err := reg.Watch("pricing")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	c, err := grpcclient.New("pricing", w, grpcclient.WithIdempotent(checkMethod))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stop := make(chan struct{})
	type res struct{ total, failed int64 }
	done := make(chan res, 1)
	go func() {
		total, failed := load(ctx, c, 6, stop, func(err error) { t.Error(err) })
		done <- res{total, failed}
	}()
	// Wait until the three instances serve (the TTL checks pass), then take b0 out as a rolling
	// restart does: deregister, let the watch carry it, stop gracefully.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if got := calls(bs...); min(got[0], got[1], got[2]) >= 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every instance serves: %v", calls(bs...))
		}
	}
	if err := regs[0].Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	var settled atomic.Int64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		before := bs[0].calls.Load()
		time.Sleep(200 * time.Millisecond)
		if bs[0].calls.Load() == before {
			settled.Store(before)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deregistered instance still gets calls after 10s")
		}
	}
	bs[0].srv.GracefulStop()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	r := <-done
	if r.failed > 0 || r.total == 0 {
		t.Fatalf("%d of %d calls failed", r.failed, r.total)
	}
	t.Logf("%d calls, none failed; b0 left rotation after %d calls", r.total, settled.Load())
}
