package bench

// Discovery benchmarks.
//
// Propagation: how long after a deregistration (or registration) on a real Consul dev agent a watcher
// sees the change, over many cycles, for discovery/consul's Registry beside a bare consul/api blocking
// query loop (the floor any Consul client can reach). Needs the consul binary
// (scripts/install-consul.sh):
//
//	cd bench && go test -run '^$' -bench DiscoveryPropagation -benchtime 200x -count 5
//
// Watcher cost: CPU, allocations and bytes per update of a 1,000-instance service, for the watch loop
// alone (in-memory Health) and end to end over HTTP with JSON decoding (the discoverytest fake Consul),
// beside a bare consul/api query of the same service:
//
//	cd bench && go test -run '^$' -bench DiscoveryWatcher -benchmem -count 6

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/consul"
	"github.com/cloudchassis/kit/discovery/discoverytest"
)

// startDevAgent runs `consul agent -dev` on free loopback ports (bench cannot import the root
// module's internal/consultest) and returns its HTTP address.
func startDevAgent(b *testing.B) string {
	b.Helper()
	bin, err := exec.LookPath("consul")
	if err != nil {
		out, _ := exec.Command("go", "env", "GOPATH").Output()
		bin = filepath.Join(strings.TrimSpace(string(out)), "bin", "consul")
		if _, err := os.Stat(bin); err != nil {
			b.Fatal("consul binary not found in PATH or $(go env GOPATH)/bin: run scripts/install-consul.sh first")
		}
	}
	var ports []string
	for len(ports) < 4 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+port)
		if err == nil {
			_ = pc.Close()
			ports = append(ports, port)
		}
		_ = ln.Close()
	}
	logPath := filepath.Join(b.TempDir(), "consul.log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "agent", "-dev", "-node=bench", "-bind=127.0.0.1", "-client=127.0.0.1",
		"-http-port="+ports[0], "-serf-lan-port="+ports[1], "-serf-wan-port="+ports[2], "-server-port="+ports[3],
		"-dns-port=-1", "-grpc-port=-1", "-grpc-tls-port=-1", "-log-level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logf.Close()
		if b.Failed() {
			log, _ := os.ReadFile(logPath)
			b.Logf("consul log:\n%s", log)
		}
	})
	addr := "127.0.0.1:" + ports[0]
	c := benchConsulClient(b, addr)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if l, err := c.Status().Leader(); err == nil && l != "" {
			return addr
		}
		if time.Now().After(deadline) {
			b.Fatal("consul dev agent not ready after 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func benchConsulClient(b *testing.B, addr string) *api.Client {
	b.Helper()
	cfg, err := consul.ConfigFromEnv(func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	cfg.Address = addr
	c, err := api.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cfg.Transport.CloseIdleConnections)
	return c
}

// percentiles reports p50 and p99 of ds in milliseconds.
func percentiles(b *testing.B, prefix string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	at := func(q float64) float64 {
		i := int(q*float64(len(ds))+0.5) - 1
		return float64(ds[max(0, min(i, len(ds)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), prefix+"-p50-ms")
	b.ReportMetric(at(0.99), prefix+"-p99-ms")
}

// flipCycles runs b.N cycles of deregister, wait until the watcher reports 1 instance, register,
// wait until it reports 2, each step 100 ms after the previous one, as real membership changes are
// spaced, and reports the p50 and p99 of both delays. wait(n) returns when the watcher reported n.
func flipCycles(b *testing.B, deregister, register func() error, wait func(n int) time.Time) {
	wait(2)
	var dereg, reg []time.Duration
	b.ResetTimer()
	for range b.N {
		for _, step := range []struct {
			do   func() error
			n    int
			into *[]time.Duration
		}{{deregister, 1, &dereg}, {register, 2, &reg}} {
			time.Sleep(100 * time.Millisecond)
			start := time.Now()
			if err := step.do(); err != nil {
				b.Fatal(err)
			}
			*step.into = append(*step.into, wait(step.n).Sub(start))
		}
	}
	b.StopTimer()
	percentiles(b, "dereg", dereg)
	percentiles(b, "reg", reg)
}

// waitInstances returns a wait for flipCycles on a chassis watcher: until an error-free snapshot
// with n instances.
func waitInstances(b *testing.B, w discovery.Watcher) func(n int) time.Time {
	var after uint64
	return func(n int) time.Time {
		for {
			s, err := w.Next(context.Background(), after)
			if err != nil {
				b.Fatal(err)
			}
			after = s.Version
			if s.Err == nil && len(s.Instances) == n {
				return time.Now()
			}
		}
	}
}

// BenchmarkDiscoveryPropagation: each iteration deregisters one of two instances, waits until the
// watcher's list no longer has it, registers it again and waits until it is back. Iterations are spaced
// by 100 ms, as real membership changes are (the watch's 50 ms minimum interval between queries only
// delays a change that follows another one within 50 ms).
func BenchmarkDiscoveryPropagation(b *testing.B) {
	addr := startDevAgent(b)
	c := benchConsulClient(b, addr)
	regs := func(id string) *api.AgentServiceRegistration {
		return &api.AgentServiceRegistration{ID: id, Name: "prop", Address: "127.0.0.1", Port: 9000,
			Check: &api.AgentServiceCheck{TTL: "1h", Status: api.HealthPassing}}
	}
	for _, id := range []string{"keep", "flip"} {
		if err := c.Agent().ServiceRegister(regs(id)); err != nil {
			b.Fatal(err)
		}
	}
	run := func(b *testing.B, wait func(n int) time.Time) {
		flipCycles(b, func() error { return c.Agent().ServiceDeregister("flip") },
			func() error { return c.Agent().ServiceRegister(regs("flip")) }, wait)
	}

	b.Run("chassis", func(b *testing.B) {
		r, err := consul.NewRegistry(consul.NewClient(c))
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		w, err := r.Watch("prop")
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		run(b, waitInstances(b, w))
	})

	b.Run("bare-api", func(b *testing.B) {
		// The floor: one goroutine-free blocking query per change, no backoff, no snapshot building.
		var index uint64
		run(b, func(n int) time.Time {
			for {
				entries, meta, err := c.Health().Service("prop", "", true, &api.QueryOptions{AllowStale: true, WaitIndex: index, WaitTime: time.Minute})
				if err != nil {
					b.Fatal(err)
				}
				index = meta.LastIndex
				if len(entries) == n {
					return time.Now()
				}
			}
		})
	})
}

// memHealth is an in-memory consul.Health: each query waits for the benchmark's go-ahead, then answers
// the 1,000 entries with one of them changed, so every query is exactly one update.
type memHealth struct {
	entries []*api.ServiceEntry
	tick    chan struct{}
	index   uint64
	mu      sync.Mutex
}

func newMemHealth(n int) *memHealth {
	h := &memHealth{tick: make(chan struct{})}
	for i := range n {
		h.entries = append(h.entries, &api.ServiceEntry{
			Node: &api.Node{Node: "n", Address: "10.0.0.1"},
			Service: &api.AgentService{
				ID: fmt.Sprintf("svc-%04d", i), Service: "svc", Address: fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), Port: 8080,
				Tags: []string{"v1", "blue"}, Meta: map[string]string{"version": "1.2.3", "zone": "eu-1"},
				Weights: api.AgentWeights{Passing: 1, Warning: 1},
			},
		})
	}
	return h
}

func (h *memHealth) Service(ctx context.Context, _ string, _ []string, _ bool, _ *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	select {
	case <-h.tick:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.index++
	// A decoded response is fresh memory: copy the slice and the changed entry (the others are shared
	// read-only, which favours neither side since the bare baseline below decodes everything).
	out := slices.Clone(h.entries)
	i := int(h.index) % len(out)
	e := *out[i]
	s := *e.Service
	s.Port = 8080 + int(h.index%2)
	e.Service = &s
	out[i] = &e
	return out, &api.QueryMeta{LastIndex: h.index}, nil
}

func BenchmarkDiscoveryWatcher1000(b *testing.B) {
	const n = 1000
	b.Run("chassis-loop", func(b *testing.B) {
		h := newMemHealth(n)
		r, err := consul.NewRegistry(h, consul.WithMinInterval(time.Nanosecond))
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		w, err := r.Watch("svc")
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		h.tick <- struct{}{}
		s, err := w.Next(context.Background(), 0)
		if err != nil || len(s.Instances) != n {
			b.Fatalf("first snapshot: %d instances, %v", len(s.Instances), err)
		}
		cpu0 := cpuTime()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			h.tick <- struct{}{}
			if s, err = w.Next(context.Background(), s.Version); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/update")
		b.ReportMetric(retainedPerInstance(s), "B/instance")
	})

	b.Run("chassis-http", func(b *testing.B) {
		srv, c := fakeConsulWith(b, n)
		defer srv.Close()
		r, err := consul.NewRegistry(consul.NewClient(c), consul.WithMinInterval(time.Nanosecond))
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		w, err := r.Watch("svc")
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		s, err := w.Next(context.Background(), 0)
		for err == nil && len(s.Instances) != n {
			s, err = w.Next(context.Background(), s.Version)
		}
		if err != nil {
			b.Fatal(err)
		}
		cpu0 := cpuTime()
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			flipPort(b, c, i)
			if s, err = w.Next(context.Background(), s.Version); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		// Includes the fake server's side (same process): an upper bound of the client's cost.
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/update")
	})

	b.Run("bare-api-http", func(b *testing.B) {
		srv, c := fakeConsulWith(b, n)
		defer srv.Close()
		_, meta, err := c.Health().Service("svc", "", true, nil)
		if err != nil {
			b.Fatal(err)
		}
		index := meta.LastIndex
		cpu0 := cpuTime()
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			flipPort(b, c, i)
			entries, meta, err := c.Health().Service("svc", "", true, &api.QueryOptions{AllowStale: true, WaitIndex: index})
			if err != nil || len(entries) != n {
				b.Fatal(err)
			}
			index = meta.LastIndex
		}
		b.StopTimer()
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/update")
	})
}

// fakeConsulWith serves the discoverytest fake Consul with n passing instances of "svc".
func fakeConsulWith(b *testing.B, n int) (*discoverytest.Server, *api.Client) {
	b.Helper()
	srv := discoverytest.NewServer()
	if err := srv.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	c := benchConsulClient(b, srv.Addr())
	for i := range n {
		err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: fmt.Sprintf("svc-%04d", i), Name: "svc", Address: fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), Port: 8080,
			Tags: []string{"v1", "blue"}, Meta: map[string]string{"version": "1.2.3", "zone": "eu-1"},
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return srv, c
}

// flipPort re-registers one instance with another port: one change, one update.
func flipPort(b *testing.B, c *api.Client, i int) {
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "svc-0000", Name: "svc", Address: "10.1.0.1", Port: 8081 + i%2,
		Tags: []string{"v1", "blue"}, Meta: map[string]string{"version": "1.2.3", "zone": "eu-1"},
	})
	if err != nil {
		b.Fatal(err)
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// retainedPerInstance estimates the heap a snapshot holds per instance: the bytes of its Instance
// values, tags and meta, as measured by allocating a copy.
func retainedPerInstance(s discovery.Snapshot) float64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	cp := make([]discovery.Instance, len(s.Instances))
	for i, in := range s.Instances {
		in.Tags = slices.Clone(in.Tags)
		m := make(map[string]string, len(in.Meta))
		for k, v := range in.Meta {
			m[k] = v
		}
		in.Meta = m
		in.ID = strings.Clone(in.ID)
		in.Address = strings.Clone(in.Address)
		cp[i] = in
	}
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(cp)
	return float64(after.TotalAlloc-before.TotalAlloc) / float64(len(s.Instances))
}
