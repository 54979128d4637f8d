package discoverytest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/discoverytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func next(t *testing.T, w discovery.Watcher, after uint64) discovery.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := w.Next(ctx, after)
	if err != nil {
		t.Fatalf("Next(%d): %v", after, err)
	}
	return s
}

func TestRegistryWatcher(t *testing.T) {
	r := discoverytest.NewRegistry()
	w := r.Watcher("svc")
	s := next(t, w, 0)
	if len(s.Instances) != 0 || s.Version == 0 {
		t.Fatalf("first snapshot %+v", s)
	}
	r.Add("svc", discovery.Instance{Address: "10.0.0.1", Port: 80})
	s = next(t, w, s.Version)
	if len(s.Instances) != 1 || s.Instances[0].ID != "10.0.0.1:80" {
		t.Fatalf("after Add: %+v", s.Instances)
	}
	down := errors.New("registry down")
	r.Fail("svc", down)
	s = next(t, w, s.Version)
	if !errors.Is(s.Err, down) || len(s.Instances) != 1 {
		t.Fatalf("during failure: %+v", s)
	}
	r.Remove("svc", "10.0.0.1:80") // not visible while failing
	r.Fail("svc", nil)
	for s.Err != nil || len(s.Instances) != 0 {
		s = next(t, w, s.Version)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if _, err := w.Next(ctx, s.Version); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next without change: %v", err)
	}
}

func TestRegistryRegistrar(t *testing.T) {
	r := discoverytest.NewRegistry()
	g := r.Registrar("svc", discovery.Instance{ID: "a", Address: "10.0.0.1", Port: 80})
	if err := g.Register(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := r.Instances("svc"); len(got) != 1 || got[0].ID != "a" {
		t.Fatalf("after Register: %+v", got)
	}
	boom := errors.New("boom")
	r.FailRegistrations(boom)
	if err := g.Deregister(t.Context()); !errors.Is(err, boom) {
		t.Fatalf("Deregister with injected failure: %v", err)
	}
	r.FailRegistrations(nil)
	if err := g.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := r.Instances("svc"); len(got) != 0 {
		t.Fatalf("after Deregister: %+v", got)
	}
	if regs, deregs := r.Calls(); regs != 1 || deregs != 2 {
		t.Errorf("calls = %d, %d", regs, deregs)
	}
}

func ExampleRegistry() {
	r := discoverytest.NewRegistry()
	r.Set("pricing", discovery.Instance{Address: "10.0.0.1", Port: 8080}, discovery.Instance{Address: "10.0.0.2", Port: 8080})
	w := r.Watcher("pricing")
	s, _ := w.Next(context.Background(), 0)
	fmt.Println(len(s.Instances), s.Instances[0].ID)

	r.Remove("pricing", "10.0.0.1:8080")
	s, _ = w.Next(context.Background(), s.Version)
	fmt.Println(len(s.Instances), s.Instances[0].ID)
	// Output:
	// 2 10.0.0.1:8080
	// 1 10.0.0.2:8080
}
