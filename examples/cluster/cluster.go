package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Timing of the instances the launcher starts.
const (
	// readyTimeout bounds an instance's start, from exec to its "ready" log line.
	readyTimeout = 30 * time.Second
	// drainDelay is each instance's DRAIN_DELAY: long enough for the watchers' blocking queries to
	// deliver the deregistration (milliseconds on loopback), short enough for a brisk rolling restart.
	drainDelay = time.Second
	// stopGrace is how long a SIGTERMed instance gets before SIGKILL; above SHUTDOWN_TIMEOUT.
	stopGrace = 12 * time.Second
)

// cluster runs the shop's instances as child processes. It is safe for concurrent use.
type cluster struct {
	bins  map[string]string
	env   []string            // common environment of every instance
	extra map[string][]string // per-service environment

	mu    sync.Mutex
	procs []*proc // every instance ever started, in start order
	next  map[string]int
}

func newCluster(bins map[string]string, env []string, extra map[string][]string) *cluster {
	return &cluster{bins: bins, env: env, extra: extra, next: map[string]int{}}
}

// baseEnv is the launcher's environment without the variables it sets for the instances (so that a
// DISCOVERY or PORT exported in the shell cannot leak into them), plus those variables.
func baseEnv(registryEnv []string) []string {
	own := []string{"HOST", "PORT", "ADMIN_PORT", "DISCOVERY", "CONSUL_", "ETCD_", "ETCDCTL_", "ADVERTISE_ADDRESS", "INSTANCE_ID",
		"SERVICE_", "DRAIN_DELAY", "SHUTDOWN_TIMEOUT", "ACCESS_LOG", "LOG_", "OTEL_", "AUTH_", "RATE_LIMIT_",
		"CHAOS_", "GATEWAY_", "REGISTER", "DISCOVERY_STATIC_", "GRPC_"}
	var env []string
	for _, kv := range os.Environ() {
		if !slices.ContainsFunc(own, func(p string) bool { return strings.HasPrefix(kv, p) }) {
			env = append(env, kv)
		}
	}
	env = append(env, registryEnv...)
	return append(env,
		"HOST=127.0.0.1", "PORT=0", "ADMIN_PORT=0", "GRPC_PORT=0", "ADVERTISE_ADDRESS=127.0.0.1",
		"DRAIN_DELAY="+drainDelay.String(), "SHUTDOWN_TIMEOUT=10s",
		"LOG_FORMAT=json", "LOG_LEVEL=info", "ACCESS_LOG=false",
		"OTEL_TRACES_EXPORTER=none", "OTEL_LOGS_EXPORTER=none",
	)
}

// start starts a new instance of service and waits until it is ready (registered in the registry).
func (c *cluster) start(ctx context.Context, service string) (*proc, error) {
	c.mu.Lock()
	c.next[service]++
	id := fmt.Sprintf("%s-%d", service, c.next[service])
	env := append(slices.Clone(c.env), c.extra[service]...)
	env = append(env, "INSTANCE_ID="+id, "SERVICE_META=instance_id:"+id)
	p := newProc(service, id, c.bins[service], env)
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	if err := p.start(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := p.waitReady(ctx); err != nil {
		p.stop(time.Second)
		return nil, err
	}
	return p, nil
}

// live returns the instances of service (all services for "") that are starting or ready.
func (c *cluster) live(service string) []*proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*proc
	for _, p := range c.procs {
		if service != "" && p.Service != service {
			continue
		}
		p.mu.Lock()
		st := p.state
		p.mu.Unlock()
		if st == StateStarting || st == StateReady {
			out = append(out, p)
		}
	}
	return out
}

// find returns the instance with id, or nil.
func (c *cluster) find(id string) *proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.procs {
		if p.ID == id {
			return p
		}
	}
	return nil
}

// all returns every instance ever started.
func (c *cluster) all() []*proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.procs)
}

// instances describes every instance for the dashboard, the dead ones of the last minute included.
func (c *cluster) instances() []InstanceInfo {
	var out []InstanceInfo
	for _, p := range c.all() {
		in := p.snapshot()
		p.mu.Lock()
		gone := !p.exitedAt.IsZero() && time.Since(p.exitedAt) > time.Minute
		p.mu.Unlock()
		if !gone {
			out = append(out, in)
		}
	}
	return out
}

// kill SIGKILLs an instance: no drain, no deregistration, as when a machine dies.
func (c *cluster) kill(p *proc) error {
	return p.signal(syscall.SIGKILL, StateKilled)
}

// replace starts a new instance of old's service, waits until it is ready, then stops old with
// SIGTERM (its graceful drain) and waits for it to exit: one step of a rolling restart.
func (c *cluster) replace(ctx context.Context, old *proc) (*proc, error) {
	p, err := c.start(ctx, old.Service)
	if err != nil {
		return nil, err
	}
	old.stop(stopGrace)
	return p, nil
}

// stopAll stops every live instance at once with SIGTERM, waits up to grace, then SIGKILLs the
// stragglers, and waits until every child has been reaped. It reports how many instances it
// stopped and how many of those needed SIGKILL. It is idempotent.
func (c *cluster) stopAll(grace time.Duration) (stopped, killed int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, p := range c.all() {
		select {
		case <-p.exited:
			continue
		default:
		}
		if p.Pid() == 0 {
			continue
		}
		wg.Go(func() {
			forced := p.stop(grace)
			mu.Lock()
			stopped++
			if forced {
				killed++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return stopped, killed
}

// pids returns the process id of every instance ever started.
func (c *cluster) pids() []int {
	var out []int
	for _, p := range c.all() {
		if pid := p.Pid(); pid != 0 {
			out = append(out, pid)
		}
	}
	return out
}

// errNoInstance is returned when the chaos schedule finds nothing to act on.
var errNoInstance = errors.New("no live instance")
