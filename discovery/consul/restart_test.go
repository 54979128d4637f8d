package consul_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/consul"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/internal/consultest"
)

// gatedAgent is a real agent whose Register calls fail while the gate is closed: the test decides
// when the Registrars' re-registration after an agent restart may arrive, so that the watch is sure
// to see the restarted agent's empty list first.
type gatedAgent struct {
	consul.Agent
	open atomic.Bool
}

var errGated = errors.New("registration held back by the test")

func (a *gatedAgent) Register(ctx context.Context, reg *api.AgentServiceRegistration) error {
	if !a.open.Load() {
		return errGated
	}
	return a.Agent.Register(ctx, reg)
}

// signalHandler is a slog handler that sends on a channel for every record whose message contains
// match: the explicit signal that the watch saw what the test waits for.
type signalHandler struct {
	match string
	ch    chan struct{}
}

func (h *signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *signalHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.match) {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return nil
}
func (h *signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *signalHandler) WithGroup(string) slog.Handler      { return h }

// TestRealAgentRestartWithEmptyStateLosesNoCall restarts a dev agent (which comes back knowing no
// service) ten times under a steady load of calls through lb and a Consul watch. Each time, the watch
// gets the restarted agent's empty list before the Registrars can register the two instances again;
// it must keep the last known list instead of emptying the balancer, so no call fails.
func TestRealAgentRestartWithEmptyStateLosesNoCall(t *testing.T) {
	integration(t)
	const runs = 10
	agent := consultest.StartDev(t)
	c := newClient(t, agent.HTTPAddr)
	gate := &gatedAgent{Agent: c}
	gate.open.Store(true)

	for i := range 2 {
		checkURL, port, _ := readyApp(t) // answers 200 on every path: the instance and its readiness
		reg, err := consul.NewRegistrar(gate, consul.Registration{
			Name: "web", ID: fmt.Sprintf("web-%d", i), Address: "127.0.0.1", Port: port,
			CheckURL: checkURL, CheckInterval: time.Second, CheckTimeout: time.Second,
		}, consul.WithResyncInterval(300*time.Millisecond), consul.WithBackoff(50*time.Millisecond, 300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.Register(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = reg.Deregister(context.Background()) })
	}

	// The watch's first answer after the agent's death is the restarted agent's (empty) list, since
	// the gate keeps the instances out; the watch logs "recovered" when it has it.
	answered := &signalHandler{match: "discovery query recovered", ch: make(chan struct{}, 1)}
	r := newRegistry(t, c, consul.WithLogger(slog.New(answered)), consul.WithBackoff(50*time.Millisecond, 500*time.Millisecond))
	w := watch(t, r, "web")
	waitFor(t, w, "both instances", func(s discovery.Snapshot) bool { return s.Err == nil && len(s.Instances) == 2 })
	b, err := lb.New("web", w)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	<-b.Ready()

	// Load: one call every 5 ms, bounded by count and by the test's end.
	var ok, failed atomic.Int64
	var firstErr sync.Once
	loadCtx, stopLoad := context.WithCancel(t.Context())
	var loadDone sync.WaitGroup
	loadDone.Add(1)
	go func() {
		defer loadDone.Done()
		client := &http.Client{Transport: lb.NewTransport(b), Timeout: 2 * time.Second}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for range 100_000 {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			resp, err := client.Get("http://web/work")
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				failed.Add(1)
				firstErr.Do(func() { t.Errorf("first failed call: %v", err) })
				continue
			}
			ok.Add(1)
		}
	}()
	t.Cleanup(func() { stopLoad(); loadDone.Wait() })

	for run := range runs {
		before := failed.Load()
		gate.open.Store(false)
		agent.Restart()
		agent.WaitReady(consultest.DevReadyTimeout)
		if entries, _, err := c.Service(t.Context(), "web", nil, true, &api.QueryOptions{}); err != nil || len(entries) != 0 {
			t.Fatalf("run %d: the restarted agent knows %d instances (%v); the test needs it empty", run, len(entries), err)
		}
		select {
		case <-answered.ch:
		case <-time.After(20 * time.Second):
			t.Fatalf("run %d: the watch never got an answer from the restarted agent", run)
		}
		// The log comes just before the watch acts on the answer: poll until it has.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			s, _ := w.Next(t.Context(), 0)
			if errors.Is(s.Err, consul.ErrUnconfirmedEmpty) && len(s.Instances) == 2 {
				break
			}
			if len(s.Instances) == 0 || time.Now().After(deadline) {
				t.Errorf("run %d: while the agent's list is empty the watch serves %d instances (err %v); want the last 2 with ErrUnconfirmedEmpty", run, len(s.Instances), s.Err)
				break
			}
		}
		// Calls keep flowing while the watch holds the list: at least 50 more before the instances may
		// come back (about a quarter of a second of load).
		for target := ok.Load() + failed.Load() + 50; ok.Load()+failed.Load() < target; {
			time.Sleep(5 * time.Millisecond)
		}
		gate.open.Store(true)
		waitFor(t, w, "the instances to register again", func(s discovery.Snapshot) bool {
			return s.Err == nil && len(s.Instances) == 2
		})
		t.Logf("run %d: %d failed calls, %d successful so far", run, failed.Load()-before, ok.Load())
	}
	stopLoad()
	loadDone.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d calls failed across %d agent restarts with empty state", n, n+ok.Load(), runs)
	} else {
		t.Logf("0 of %d calls failed across %d agent restarts with empty state", ok.Load(), runs)
	}
}
