package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/internal/consultest"
)

// TestRollingRestartLosesNoRequest replaces three hello instances one at a time, under steady load
// from a chassis client that finds them through a real Consul agent: each new instance registers once
// ready, each old one deregisters at the start of its drain and keeps serving for DRAIN_DELAY, and the
// caller sees no failed request.
func TestRollingRestartLosesNoRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Consul and several processes")
	}
	agent := consultest.StartDev(t)
	bin := build(t)
	env := []string{"DISCOVERY=consul", "CONSUL_HTTP_ADDR=" + agent.HTTPAddr, "ADVERTISE_ADDRESS=127.0.0.1",
		"DRAIN_DELAY=1s", "SHUTDOWN_TIMEOUT=10s", "ACCESS_LOG=false", "SHED_INITIAL_LIMIT=64"}
	var olds []*proc
	for range 3 {
		olds = append(olds, startHello(t, bin, env...))
	}

	caller, err := chassis.New("caller", chassis.WithEnv(config.MapLookup(map[string]string{
		"DISCOVERY": "consul", "CONSUL_HTTP_ADDR": agent.HTTPAddr, "REGISTER": "false",
		"HOST": "127.0.0.1", "PORT": "0", "ADMIN_PORT": "0", "DRAIN_DELAY": "0s", "LOG_LEVEL": "error",
	})), chassis.WithoutSignals(), chassis.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	client := caller.Client("hello")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- caller.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	<-caller.Ready()

	// Open-loop load at 100 req/s of 20 ms requests until the restart is over (bounded to 60 s).
	var (
		sent, failed atomic.Int64
		wg           sync.WaitGroup
		firstErr     atomic.Value
		stop         = make(chan struct{})
	)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		limit := time.After(60 * time.Second)
		for {
			select {
			case <-stop:
				return
			case <-limit:
				return
			case <-tick.C:
			}
			sent.Add(1)
			wg.Go(func() {
				res, err := client.Get("http://hello/hello/rolling?delay=20ms")
				if err == nil {
					_, err = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if err == nil && res.StatusCode != 200 {
						err = fmt.Errorf("status %d", res.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			})
		}
	}()

	time.Sleep(time.Second) // steady state on the three old instances
	t0 := time.Now()
	for i, old := range olds {
		startHello(t, bin, env...) // the replacement registers once ready
		if err := old.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-old.exited:
			if old.exitErr != nil {
				t.Errorf("old instance %d exited with %v", i, old.exitErr)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("old instance %d did not exit", i)
		}
	}
	time.Sleep(500 * time.Millisecond) // traffic on the new instances only
	close(stop)
	wg.Wait()

	entries, _, err := agent.Client.Health().Service("hello", "", true, nil)
	if err != nil || len(entries) != 3 {
		t.Errorf("passing instances after the restart: %d (%v), want 3", len(entries), err)
	}
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed during the rolling restart; first: %v", n, sent.Load(), firstErr.Load())
	}
	t.Logf("rolling restart of 3 instances in %v: %d requests, %d failed", time.Since(t0).Round(time.Millisecond), sent.Load(), failed.Load())
}
