package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/internal/consultest"
)

// TestRollingRestartLosesNoRequest replaces three hello instances one at a time, under steady load
// from a chassis client that finds them through a real Consul agent: each new instance registers once
// ready, each old one deregisters at the start of its drain and keeps serving for DRAIN_DELAY, and the
// caller sees no failed request.
func TestRollingRestartLosesNoRequest(t *testing.T) {
	agent, bin, env, olds := startRolling(t)

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
	load := startLoad(10*time.Millisecond, func() error { return get(client, "http://hello/hello/rolling?delay=20ms") })
	time.Sleep(time.Second) // steady state on the three old instances
	t0 := time.Now()
	replaceEach(t, bin, env, olds)
	time.Sleep(500 * time.Millisecond) // traffic on the new instances only
	load.finish()

	entries, _, err := agent.Client.Health().Service("hello", "", true, nil)
	if err != nil || len(entries) != 3 {
		t.Errorf("passing instances after the restart: %d (%v), want 3", len(entries), err)
	}
	load.check(t, "during the rolling restart")
	t.Logf("rolling restart of 3 instances in %v: %d requests, %d failed", time.Since(t0).Round(time.Millisecond), load.sent.Load(), load.failed.Load())
}

// TestRollingRestartPlainClient is the rolling restart as a caller without Chassis sees it: a plain
// net/http client that never retries, behind a minimal edge balancer that sends each request to
// the next passing instance in Consul (as a proxy with a Consul-fed upstream list does). With
// default settings and about 10 requests in flight per instance, including on each new instance
// from its first second, no request may fail: a fresh instance must not shed its share of the load.
func TestRollingRestartPlainClient(t *testing.T) {
	agent, bin, env, olds := startRolling(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lb := &edgeBalancer{}
	var watchers sync.WaitGroup
	watchers.Go(func() { lb.watch(ctx, agent.Client) })
	defer watchers.Wait()
	defer cancel()
	if !lb.waitFor(3, 10*time.Second) {
		t.Fatal("the three instances never all passed in Consul")
	}

	// Open-loop load: 150 req/s of 200 ms requests, about 30 in flight, 10 per instance (bounded to 60 s).
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	load := startLoad(time.Second/150, func() error {
		addr := lb.next()
		if err := get(client, "http://"+addr+"/hello/plain?delay=200ms"); err != nil {
			return fmt.Errorf("%s: %w", addr, err)
		}
		return nil
	})
	time.Sleep(time.Second) // steady state on the three old instances
	t0 := time.Now()
	replaceEach(t, bin, env, olds) // each new instance gets a third of the load as soon as it passes
	time.Sleep(time.Second)        // traffic on the new instances only
	load.finish()

	load.check(t, "during the rolling restart")
	t.Logf("rolling restart of 3 instances in %v under a plain client: %d requests, %d failed",
		time.Since(t0).Round(time.Millisecond), load.sent.Load(), load.failed.Load())
}

// edgeBalancer round-robins over the passing instances of hello that a Consul blocking query
// reports, and never retries: what an edge proxy fed by Consul does.
type edgeBalancer struct {
	mu    sync.Mutex
	addrs []string
	i     int
}

func (b *edgeBalancer) watch(ctx context.Context, c *api.Client) {
	var index uint64
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx)
		entries, meta, err := c.Health().Service("hello", "", true, q)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		index = meta.LastIndex
		addrs := make([]string, 0, len(entries))
		for _, e := range entries {
			addrs = append(addrs, net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port)))
		}
		b.mu.Lock()
		b.addrs = addrs
		b.mu.Unlock()
	}
}

func (b *edgeBalancer) next() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.addrs) == 0 {
		return "127.0.0.1:1" // nothing passing: the request fails, and the test with it
	}
	b.i++
	return b.addrs[b.i%len(b.addrs)]
}

func (b *edgeBalancer) waitFor(n int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		b.mu.Lock()
		k := len(b.addrs)
		b.mu.Unlock()
		if k == n {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// startRolling starts a Consul dev agent and three hello instances registered in it, with default
// shedder settings, and returns what a rolling restart test needs to start their replacements.
func startRolling(t *testing.T) (agent *consultest.Agent, bin string, env []string, olds []*proc) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs Consul and several processes")
	}
	agent = consultest.StartDev(t)
	bin = build(t)
	env = []string{"DISCOVERY=consul", "CONSUL_HTTP_ADDR=" + agent.HTTPAddr, "ADVERTISE_ADDRESS=127.0.0.1",
		"DRAIN_DELAY=1s", "SHUTDOWN_TIMEOUT=10s", "ACCESS_LOG=false"}
	for range 3 {
		olds = append(olds, startHello(t, bin, env...))
	}
	return agent, bin, env, olds
}

// replaceEach starts a replacement for each old instance (it registers once ready), then stops the
// old one with SIGTERM and waits for its clean exit: a rolling restart, one instance at a time.
func replaceEach(t *testing.T, bin string, env []string, olds []*proc) {
	t.Helper()
	for i, old := range olds {
		startHello(t, bin, env...)
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
}

// openLoad sends one call per tick, each in its own goroutine (open loop: a slow answer does not
// delay the next call), until finish or for 60 s at most, and counts the calls that failed.
type openLoad struct {
	sent, failed atomic.Int64
	firstErr     atomic.Value
	wg           sync.WaitGroup
	stop, done   chan struct{}
}

func startLoad(every time.Duration, call func() error) *openLoad {
	l := &openLoad{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		limit := time.After(60 * time.Second)
		for {
			select {
			case <-l.stop:
				return
			case <-limit:
				return
			case <-tick.C:
			}
			l.sent.Add(1)
			l.wg.Go(func() {
				if err := call(); err != nil {
					l.failed.Add(1)
					l.firstErr.CompareAndSwap(nil, err)
				}
			})
		}
	}()
	return l
}

// finish stops sending and waits for every call in flight.
func (l *openLoad) finish() {
	close(l.stop)
	<-l.done
	l.wg.Wait()
}

// check fails the test if any call failed.
func (l *openLoad) check(t *testing.T, when string) {
	t.Helper()
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed %s; first: %v", n, l.sent.Load(), when, l.firstErr.Load())
	}
}

// get is one GET that fails unless the answer is a 200 whose body reads to the end.
func get(c *http.Client, url string) error {
	res, err := c.Get(url)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err == nil && res.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", res.StatusCode)
	}
	return err
}
