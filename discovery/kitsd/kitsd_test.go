package kitsd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"
	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/discoverytest"
	"github.com/cloudchassis/kit/discovery/kitsd"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func recv(t *testing.T, ch <-chan sd.Event) sd.Event {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
		return sd.Event{}
	}
}

func TestInstancerEvents(t *testing.T) {
	reg := discoverytest.NewRegistry()
	reg.Set("svc", discovery.Instance{Address: "10.0.0.2", Port: 80}, discovery.Instance{Address: "10.0.0.1", Port: 80})
	in := kitsd.NewInstancer(reg.Watcher("svc"))
	defer in.Stop()

	ch := make(chan sd.Event, 4)
	in.Register(ch)
	defer in.Deregister(ch)
	ev := recv(t, ch)
	for len(ev.Instances) == 0 { // the state before the first snapshot is empty
		ev = recv(t, ch)
	}
	if fmt.Sprint(ev.Instances) != "[10.0.0.1:80 10.0.0.2:80]" || ev.Err != nil {
		t.Fatalf("event %+v", ev)
	}

	down := errors.New("down")
	reg.Fail("svc", down)
	if ev = recv(t, ch); !errors.Is(ev.Err, down) || ev.Instances != nil {
		t.Fatalf("error event %+v; want go-kit's convention: error, no instances", ev)
	}
	reg.Fail("svc", nil)
	if ev = recv(t, ch); len(ev.Instances) != 2 || ev.Err != nil {
		t.Fatalf("recovered %+v", ev)
	}
	reg.Remove("svc", "10.0.0.1:80")
	if ev = recv(t, ch); fmt.Sprint(ev.Instances) != "[10.0.0.2:80]" {
		t.Fatalf("after remove %+v", ev)
	}
	if st := in.State(); fmt.Sprint(st.Instances) != "[10.0.0.2:80]" {
		t.Errorf("State %+v", st)
	}
}

func TestInstancerWithGoKitEndpointer(t *testing.T) {
	reg := discoverytest.NewRegistry()
	reg.Set("svc", discovery.Instance{Address: "10.0.0.1", Port: 80})
	in := kitsd.NewInstancer(reg.Watcher("svc"))
	defer in.Stop()
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		return func(context.Context, any) (any, error) { return instance, nil }, nil, nil
	}
	e := sd.NewEndpointer(in, factory, log.NewNopLogger())
	defer e.Close()
	balancer := lb.NewRoundRobin(e)
	deadline := time.Now().Add(5 * time.Second)
	for {
		ep, err := balancer.Endpoint()
		if err == nil {
			got, _ := ep(context.Background(), nil)
			if got == "10.0.0.1:80" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("go-kit balancer never got the instance: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatcherFromGoKit(t *testing.T) {
	w := kitsd.NewWatcher("svc", sd.FixedInstancer{"b:2", "a:1", "bad"})
	defer w.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := w.Next(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Instances) != 2 || s.Instances[0].ID != "a:1" || s.Instances[1].Port != 2 || s.Err == nil {
		t.Fatalf("snapshot %+v", s)
	}
	_ = w.Close()
	if _, err := w.Next(ctx, 0); !errors.Is(err, discovery.ErrClosed) {
		t.Errorf("Next after Close: %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	reg := discoverytest.NewRegistry()
	reg.Set("svc", discovery.Instance{Address: "10.0.0.1", Port: 80})
	in := kitsd.NewInstancer(reg.Watcher("svc"))
	w := kitsd.NewWatcher("svc", in)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var s discovery.Snapshot
	for len(s.Instances) == 0 {
		var err error
		if s, err = w.Next(ctx, s.Version); err != nil {
			t.Fatal(err)
		}
	}
	down := errors.New("down")
	reg.Fail("svc", down)
	for s.Err == nil {
		s, _ = w.Next(ctx, s.Version)
	}
	if !errors.Is(s.Err, down) || len(s.Instances) != 1 {
		t.Errorf("error snapshot %+v: want the last known list kept", s)
	}
	_ = w.Close() // deregisters first, then
	in.Stop()
}

func ExampleNewInstancer() {
	w := discovery.NewStatic("pricing", []discovery.Instance{{Address: "10.0.0.1", Port: 8080}})
	in := kitsd.NewInstancer(w)
	defer in.Stop()
	ch := make(chan sd.Event, 1)
	in.Register(ch)
	defer in.Deregister(ch)
	for ev := range ch {
		if len(ev.Instances) > 0 {
			fmt.Println(ev.Instances)
			break
		}
	}
	// Output: [10.0.0.1:8080]
}
