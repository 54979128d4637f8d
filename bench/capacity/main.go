// Command capacity measures what discovery costs at scale on a real Consul agent: for each size N it
// starts a fresh `consul agent -dev` on loopback (one process that is both the server and the local
// agent), registers N instances of one service, each on its own node, through the catalog API (the
// servers' side of N registrations), and watches the service with discovery/consul. It prints, per N:
//
//   - registration: time, the agent's CPU and resident memory per registered instance;
//   - one watcher: the first list's bytes on the wire, the watcher's heap per watched instance, and per
//     update (one instance changes its port) the latency until the watcher has it, the bytes on the
//     wire, the process's CPU and the agent's CPU;
//   - W watchers (each its own client and connection, as W processes would be): the agent's goroutines,
//     memory, connections, blocking queries and streams per watcher, and per update the latency until
//     all W have it and the agent's CPU.
//
// Run from bench/ (docs/capacity.md quotes its output):
//
//	GOTOOLCHAIN=auto go run ./capacity -n 100,1000,5000
//
// It needs the consul binary (scripts/install-consul.sh).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/consul"
	"github.com/cloudchassis/kit/internal/consultest"
	"github.com/cloudchassis/kit/internal/procstat"
)

const service = "capsvc"

// gaugeInterval is how long until the agent's /v1/agent/metrics shows a new value of a runtime gauge.
const gaugeInterval = 11 * time.Second

func main() {
	sizes := flag.String("n", "100,1000,5000", "comma-separated numbers of instances")
	updates := flag.Int("updates", 20, "updates measured per size")
	watchers := flag.Int("watchers", 20, "watchers of the fan-out measurement (each its own client and connection)")
	out := flag.String("o", "", "also write the Markdown table to this file")
	flag.Parse()
	var ns []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "capacity: bad -n %q\n", s)
			os.Exit(2)
		}
		ns = append(ns, n)
	}
	var rows []result
	err := consultest.Run(func(t consultest.TB) {
		for _, n := range ns {
			r := measure(t, n, *updates, *watchers)
			rows = append(rows, r)
			fmt.Fprintf(os.Stderr, "capacity: %d instances done\n", n)
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "capacity:", err)
		os.Exit(1)
	}
	var b strings.Builder
	writeTable(&b, rows, *updates, *watchers)
	fmt.Print(b.String())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "capacity:", err)
			os.Exit(1)
		}
	}
}

// result is one size's measurements.
type result struct {
	n int
	// registration
	regSeconds    float64
	regAgentCPUus float64 // agent CPU per registration
	regAgentRSSB  float64 // agent RSS growth per registered instance
	agentRSSMiB   float64 // agent RSS with n instances
	// one watcher
	firstBytes     float64 // first list on the wire (gzip: Go's client asks for it, Consul compresses)
	jsonBytes      float64 // the same list as JSON, uncompressed
	heapPerInst    float64 // watcher heap per watched instance
	updP50, updMax time.Duration
	updBytes       float64 // bytes on the wire per update
	updClientCPUms float64
	updAgentCPUms  float64
	// w watchers
	perWatcherGoroutines float64
	perWatcherRSSKiB     float64
	conns                float64 // connections to the agent's HTTP port with w+1 watchers
	blocking, streams    float64 // the agent's gauges, highest seen over the whole run; -1 never reported
	fanP50, fanMax       time.Duration
	fanAgentCPUms        float64
	fanClientCPUms       float64 // this process, all watchers, per update
}

func measure(t consultest.TB, n, updates, w int) result {
	a := consultest.StartDev(t)
	defer a.Kill()
	pid := a.Pid()
	r := result{n: n}
	ctx := context.Background()
	// go-metrics reports a gauge only in an interval in which it was set (a stream, for one, is
	// opened once and then shared): poll the two query gauges for the whole run, keep the highest.
	r.blocking, r.streams = -1, -1
	pollCtx, stopPoll := context.WithCancel(ctx)
	var poll sync.WaitGroup
	poll.Go(func() {
		for pollCtx.Err() == nil {
			if m, err := a.Client.Agent().Metrics(); err == nil {
				for _, g := range m.Gauges {
					switch g.Name {
					case "consul.rpc.queries_blocking":
						r.blocking = max(r.blocking, float64(g.Value))
					case "consul.grpc.server.streams":
						r.streams = max(r.streams, float64(g.Value))
					}
				}
			}
			select {
			case <-pollCtx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	})
	stopGauges := func() { stopPoll(); poll.Wait() }
	defer stopGauges() // on a failure; a second call is harmless

	time.Sleep(time.Second) // let the fresh agent settle before the baseline
	rss0, cpu0 := procRSS(pid), procCPU(pid)
	t0 := time.Now()
	register(t, a.Client, n)
	r.regSeconds = time.Since(t0).Seconds()
	cpu1 := procCPU(pid)
	// The agent's idle CPU (anti-entropy, its own metrics, raft): subtracted from what updates cost.
	idle0, tIdle := procCPU(pid), time.Now()
	time.Sleep(3 * time.Second)
	idle := float64(procCPU(pid)-idle0) / float64(time.Since(tIdle))
	rss1 := procRSS(pid)
	r.regAgentCPUus = float64((cpu1 - cpu0).Microseconds()) / float64(n)
	r.regAgentRSSB = float64(rss1-rss0) / float64(n)
	r.agentRSSMiB = float64(rss1) / (1 << 20)

	// One watcher.
	var wire atomic.Int64
	heap0 := heapAlloc()
	reg, watch := newWatcher(t, a.HTTPAddr, &wire)
	defer reg.Close()
	waitFor(t, ctx, []*consul.Watcher{watch}, nil, func(s discovery.Snapshot) bool { return len(s.Instances) == n })
	r.firstBytes = float64(wire.Load())
	r.heapPerInst = float64(heapAlloc()-heap0) / float64(n)
	r.jsonBytes = jsonSize(t, a.HTTPAddr)
	lat, clientCPU, agentCPU, bytes := runUpdates(t, ctx, a.Client, pid, idle, []*consul.Watcher{watch}, n, updates, &wire, 0)
	r.updP50, r.updMax = pct(lat, 0.5), slices.Max(lat)
	r.updBytes, r.updClientCPUms, r.updAgentCPUms = bytes, clientCPU, agentCPU

	// W more watchers, each with its own client and connection. The agent's runtime gauges are
	// those of its current 10 s metrics interval: wait one out before each reading.
	time.Sleep(gaugeInterval)
	g0, rssW0 := agentGauges(t, a.Client)["consul.runtime.num_goroutines"], procRSS(pid)
	all := []*consul.Watcher{watch}
	for range w {
		rg, wt := newWatcher(t, a.HTTPAddr, &wire)
		defer rg.Close()
		all = append(all, wt)
	}
	waitFor(t, ctx, all, nil, func(s discovery.Snapshot) bool { return len(s.Instances) == n })
	time.Sleep(gaugeInterval)
	gs := agentGauges(t, a.Client)
	r.perWatcherGoroutines = (gs["consul.runtime.num_goroutines"] - g0) / float64(w)
	r.perWatcherRSSKiB = float64(procRSS(pid)-rssW0) / 1024 / float64(w)
	r.conns = establishedTo(a.HTTPAddr)
	fan := max(3, updates/2)
	lat, clientCPU, agentCPU, _ = runUpdates(t, ctx, a.Client, pid, idle, all, n, fan, &wire, updates)
	r.fanP50, r.fanMax = pct(lat, 0.5), slices.Max(lat)
	r.fanAgentCPUms, r.fanClientCPUms = agentCPU, clientCPU
	stopGauges()
	return r
}

// register puts n instances of the service on n nodes through the catalog, 16 at a time, each with a
// passing service check, as the servers would hold them after n agents registered one each.
func register(t consultest.TB, c *api.Client, n int) {
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	next := atomic.Int64{}
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := put(c, i, 8080); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatalf("register: %v", err)
	}
}

// put writes instance i with the given port: one catalog change.
func put(c *api.Client, i, port int) error {
	node := fmt.Sprintf("node-%05d", i)
	id := fmt.Sprintf("%s-%05d", service, i)
	addr := fmt.Sprintf("10.%d.%d.%d", 1+i/62500, i/250%250, i%250+1)
	_, err := c.Catalog().Register(&api.CatalogRegistration{
		Node: node, Address: addr,
		Service: &api.AgentService{ID: id, Service: service, Address: addr, Port: port,
			Tags: []string{"v1", "blue"}, Meta: map[string]string{"version": "1.2.3", "zone": "eu-1"}},
		Check: &api.AgentCheck{Node: node, CheckID: "service:" + id, Name: "ready", Status: api.HealthPassing, ServiceID: id},
	}, nil)
	return err
}

// newWatcher is a discovery/consul Registry with its own client (and so its own connection to the
// agent) watching the service; every byte it reads from the agent is added to wire.
func newWatcher(t consultest.TB, addr string, wire *atomic.Int64) (*consul.Registry, *consul.Watcher) {
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = addr
	tr := cfg.Transport
	tr.DialContext = func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return &countingConn{Conn: c, n: wire}, nil
	}
	cfg.HttpClient = &http.Client{Transport: tr}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := consul.NewRegistry(consul.NewClient(c))
	if err != nil {
		t.Fatal(err)
	}
	w, err := reg.Watch(service)
	if err != nil {
		t.Fatal(err)
	}
	return reg, w
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// runUpdates changes one instance's port k times, 200 ms apart, and waits each time until every
// watcher has the change. It returns the latencies, this process's and the agent's CPU per update in
// ms (the agent's less its idle CPU, idle per unit of time), and the bytes read from the agent per
// update and watcher.
func runUpdates(t consultest.TB, ctx context.Context, c *api.Client, pid int, idle float64, ws []*consul.Watcher, n, k int, wire *atomic.Int64, seed int) ([]time.Duration, float64, float64, float64) {
	versions := make([]uint64, len(ws))
	var lat []time.Duration
	self0, agent0, bytes0, t0 := selfCPU(), procCPU(pid), wire.Load(), time.Now()
	for i := range k {
		time.Sleep(200 * time.Millisecond)
		inst, port := (seed+i)*7919%n, 9000+seed+i
		id := fmt.Sprintf("%s-%05d", service, inst)
		start := time.Now()
		if err := put(c, inst, port); err != nil {
			t.Fatalf("update: %v", err)
		}
		waitFor(t, ctx, ws, versions, func(s discovery.Snapshot) bool {
			for _, in := range s.Instances {
				if in.ID == id {
					return in.Port == port
				}
			}
			return false
		})
		lat = append(lat, time.Since(start))
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(k) }
	agent := procCPU(pid) - agent0 - time.Duration(idle*float64(time.Since(t0)))
	return lat, per(selfCPU() - self0), per(max(0, agent)), float64(wire.Load()-bytes0) / float64(k) / float64(len(ws))
}

// waitFor waits until every watcher's snapshot satisfies ok, within a minute, and returns the
// snapshots; versions (if not nil) holds each watcher's last seen version and is updated.
func waitFor(t consultest.TB, ctx context.Context, ws []*consul.Watcher, versions []uint64, ok func(discovery.Snapshot) bool) []discovery.Snapshot {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if versions == nil {
		versions = make([]uint64, len(ws))
	}
	out := make([]discovery.Snapshot, len(ws))
	var wg sync.WaitGroup
	errs := make([]error, len(ws))
	for i, w := range ws {
		wg.Go(func() {
			for {
				s, err := w.Next(ctx, versions[i])
				if err != nil {
					errs[i] = err
					return
				}
				versions[i] = s.Version
				if s.Err == nil && ok(s) {
					out[i] = s
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("watchers: %v", err)
	}
	return out
}

// jsonSize is the size of the service's healthy list as Consul sends it without compression.
func jsonSize(t consultest.TB, addr string) float64 {
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: time.Minute}
	defer c.CloseIdleConnections()
	res, err := c.Get("http://" + addr + "/v1/health/service/" + service + "?passing&stale")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	defer res.Body.Close()
	n, err := io.Copy(io.Discard, res.Body)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	return float64(n)
}

// agentGauges reads the agent's gauges from /v1/agent/metrics.
func agentGauges(t consultest.TB, c *api.Client) map[string]float64 {
	m, err := c.Agent().Metrics()
	if err != nil {
		t.Fatalf("agent metrics: %v", err)
	}
	out := map[string]float64{}
	for _, g := range m.Gauges {
		out[g.Name] = float64(g.Value)
	}
	return out
}

// procRSS is a process's resident set in bytes, 0 when it cannot be read.
func procRSS(pid int) int64 {
	b, _ := procstat.RSS(pid)
	return b
}

// procCPU is a process's CPU time, 0 when it cannot be read.
func procCPU(pid int) time.Duration {
	d, _ := procstat.CPU(pid)
	return d
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapAlloc() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// establishedTo counts the connections established to the agent's HTTP port.
func establishedTo(addr string) float64 {
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	n, _ := procstat.Established(port)
	return float64(n)
}

func pct(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func writeTable(w io.Writer, rows []result, updates, watchers int) {
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) }
	fmt.Fprintf(w, "One `consul agent -dev` (server and agent in one process) on loopback; %d updates with one watcher, %d with %d+1 watchers.\n\n",
		updates, max(3, updates/2), watchers)
	heap := func(v float64) string {
		if v <= 0 {
			return "below noise"
		}
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	gauge := func(v float64) string {
		if v < 0 {
			return "0 (never set)"
		}
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	fmt.Fprintf(w, "| instances | register: s | agent CPU µs/registration | agent RSS B/instance | agent RSS MiB | list: JSON KiB / gzip KiB | watcher heap B/instance | update p50 / max ms | update KiB on the wire | process CPU ms/update | agent CPU ms/update |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(w, "| %d | %.1f | %.0f | %.0f | %.0f | %.0f / %.0f | %s | %s / %s | %.0f | %.2f | %.2f |\n",
			r.n, r.regSeconds, r.regAgentCPUus, r.regAgentRSSB, r.agentRSSMiB, r.jsonBytes/1024, r.firstBytes/1024, heap(r.heapPerInst),
			ms(r.updP50), ms(r.updMax), r.updBytes/1024, r.updClientCPUms, r.updAgentCPUms)
	}
	fmt.Fprintf(w, "\n| instances | %d+1 watchers: agent goroutines / watcher | agent RSS KiB / watcher | conns to the agent | blocking queries (max) | streams (max) | update to all p50 / max ms | agent CPU ms/update | agent CPU ms/update/watcher | watchers' CPU ms/update |\n", watchers)
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(w, "| %d | %.1f | %.0f | %.0f | %s | %s | %s / %s | %.1f | %.2f | %.1f |\n",
			r.n, r.perWatcherGoroutines, r.perWatcherRSSKiB, r.conns, gauge(r.blocking), gauge(r.streams), ms(r.fanP50), ms(r.fanMax),
			r.fanAgentCPUms, r.fanAgentCPUms/float64(watchers+1), r.fanClientCPUms)
	}
}
