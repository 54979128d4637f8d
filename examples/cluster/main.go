// Command cluster runs the Chassis demo: the shop's services as separate processes that find each
// other through a registry, a load generator playing the customers, an optional chaos schedule and a
// live dashboard. From the repository root:
//
//	go run ./examples/cluster                      # 60 s, chaos on, dashboard on 127.0.0.1:8088
//	go run ./examples/cluster -duration 0          # until Ctrl-C
//	go run ./examples/cluster -consul=local        # a real Consul agent (consul on PATH or in GOPATH/bin)
//	go run ./examples/cluster -registry=etcd       # a local etcd member (etcd on PATH or in GOPATH/bin)
//	CONSUL_HTTP_ADDR=127.0.0.1:8500 go run ./examples/cluster   # an agent you run
//	go run ./examples/cluster -soak -consul=local -duration 10m -dashboard=   # the soak (make soak)
//
// It builds the four service binaries once, starts the registry (by default discoverytest's fake
// Consul HTTP API, in this process: nothing to install), starts -instances of each service on free
// loopback ports, and sends an open-loop mix of requests to the gateways through the same discovery,
// balancer and resilience packages a service uses. With -chaos it kills an instance, slows one down,
// does a rolling restart, cuts the registry off and triples the load, each once (every minute when
// the demo runs until Ctrl-C, or with -chaos-every), and reports how the cluster reacted. With -soak
// it also samples every process's goroutines, memory and open files and the agent's queries, and
// fails if one grows without bound (docs/demo.md, "Soak"). Ctrl-C stops everything in
// order: load, chaos, then SIGTERM to every instance, SIGKILL to stragglers. docs/demo.md explains
// what to watch.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// A second Ctrl-C while stopping: leave at once. Pdeathsig (Linux) takes the children along.
		<-ctx.Done()
		stop()
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		<-ch
		fmt.Fprintln(os.Stderr, "second signal: exiting now")
		os.Exit(130)
	}()
	err := run(ctx, os.Args[1:], os.Stdout)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

// options are the launcher's flags.
type options struct {
	duration    time.Duration
	rate        float64
	instances   int
	chaos       bool
	dashboard   string
	consul      string
	registry    string // consul or etcd
	summaryJSON string
	promTargets string
	users       int
	seed        uint64
	auth        bool
	goTool      string
	prebuilt    string
	chaosEvery  time.Duration // the chaos schedule's period; 0: once over -duration, or every minute when it is 0
	soak        soakOptions
}

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.DurationVar(&o.duration, "duration", 60*time.Second, "how long the load runs; 0 runs until Ctrl-C")
	fs.Float64Var(&o.rate, "rate", 100, "requests per second the load generator sends (open loop)")
	fs.IntVar(&o.instances, "instances", 3, "instances of each service")
	fs.BoolVar(&o.chaos, "chaos", true, "run the chaos schedule: kill, slow down, rolling restart, registry outage, load spike")
	fs.StringVar(&o.dashboard, "dashboard", "127.0.0.1:8088", "address of the live dashboard; empty turns it off")
	fs.StringVar(&o.consul, "consul", "", `registry: "" = embedded fake Consul, or a real agent from CONSUL_HTTP_ADDR; "local" starts consul agent -dev`)
	fs.StringVar(&o.registry, "registry", "consul", `registry engine: "consul" (see -consul) or "etcd" (starts a local etcd member: etcd on PATH or in GOPATH/bin, scripts/install-etcd.sh)`)
	fs.StringVar(&o.summaryJSON, "summary-json", "", "write the final summary as JSON to this file")
	fs.StringVar(&o.promTargets, "prom-targets", "", "keep a Prometheus file_sd targets file of every instance's admin port here (see deploy/prometheus)")
	fs.IntVar(&o.users, "users", 200, "distinct shop users in the load")
	fs.Uint64Var(&o.seed, "seed", 0, "random seed of the load mix and the chaos targets; 0 picks one")
	fs.BoolVar(&o.auth, "auth", true, "gateway verifies JWT bearer tokens (carts need one) and rate-limits cart writes per user")
	fs.StringVar(&o.goTool, "go", "go", "the go command used to build the services")
	fs.StringVar(&o.prebuilt, "prebuilt", "", "use the service binaries already in this directory (gateway, catalog, pricing, cart) instead of building them")
	fs.DurationVar(&o.chaosEvery, "chaos-every", 0, "repeat the chaos schedule with this period (0: once over -duration, or every minute when -duration is 0)")
	o.soak.flags(fs)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var errs []error
	if o.chaosEvery < 0 || (o.chaosEvery > 0 && o.chaosEvery < 10*time.Second) {
		errs = append(errs, errors.New("-chaos-every must be 0 or at least 10s"))
	}
	errs = append(errs, o.soak.check(&o)...)
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if o.duration < 0 {
		errs = append(errs, errors.New("-duration must not be negative"))
	}
	if !(o.rate > 0 && o.rate <= 20000) {
		errs = append(errs, errors.New("-rate must be in (0, 20000]"))
	}
	if o.instances < 1 || o.instances > 20 {
		errs = append(errs, errors.New("-instances must be 1-20"))
	}
	if o.consul != "" && o.consul != "local" {
		errs = append(errs, fmt.Errorf(`-consul=%q: want "" or "local" (for an agent you run, set CONSUL_HTTP_ADDR)`, o.consul))
	}
	switch {
	case o.registry != "consul" && o.registry != "etcd":
		errs = append(errs, fmt.Errorf(`-registry=%q: want "consul" or "etcd"`, o.registry))
	case o.registry == "etcd" && o.consul != "":
		errs = append(errs, errors.New(`-consul applies to -registry=consul only`))
	}
	if o.users < 1 {
		errs = append(errs, errors.New("-users must be at least 1"))
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	return o, errors.Join(errs...)
}

// demo is one run of the launcher.
type demo struct {
	o     options
	out   io.Writer
	start time.Time // of the load

	reg     registry
	regView *registryWatcher
	cl      *cluster
	edge    *edge
	load    *loadGen
	tl      *timeline
	scr     *scraper // with reg, regView and cl: set once, before the observer starts
	ch      *chaos
	dash    *dashboard
	phaseMu sync.Mutex // guards phase, reg, regView, cl and scr as they are set, and start, load and ch once the load starts
	phase   string
	shareMu sync.Mutex
	share   map[string]map[string]int // last second's responses per instance, by service
	outMu   sync.Mutex
}

func (d *demo) phaseIs(p string) bool {
	d.phaseMu.Lock()
	defer d.phaseMu.Unlock()
	return d.phase == p
}

func (d *demo) setPhase(p string) {
	d.phaseMu.Lock()
	d.phase = p
	d.phaseMu.Unlock()
}

func (d *demo) printf(format string, args ...any) {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(d.out, format, args...)
}

// running returns the load's start, the load generator and the chaos; zero before the load starts.
func (d *demo) running() (time.Time, *loadGen, *chaos) {
	d.phaseMu.Lock()
	defer d.phaseMu.Unlock()
	return d.start, d.load, d.ch
}

func (d *demo) clock() string {
	start, _, _ := d.running()
	if start.IsZero() {
		return "[  setup]"
	}
	return fmt.Sprintf("[%6.1fs]", time.Since(start).Seconds())
}

// run is the whole launcher; it returns when the demo is over and every child has exited.
func run(ctx context.Context, args []string, out io.Writer) (err error) {
	o, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	d := &demo{o: o, out: out, phase: "starting", share: map[string]map[string]int{}}
	d.tl = &timeline{notify: d.onEvent}

	tmp, err := os.MkdirTemp("", "chassis-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	d.printf("Chassis demo: the shop (gateway, catalog, pricing, cart), %d instances each, %s\n", o.instances, describeRun(o))
	// The dashboard first: a busy port fails now, not after the build, and the page shows the
	// build and the start-up as they happen.
	if o.dashboard != "" {
		if d.dash, err = newDashboard(o.dashboard, d.state, d.act(ctx)); err != nil {
			return err
		}
		defer func() { _ = d.dash.Close() }()
		d.printf("%s dashboard: %s\n", d.clock(), d.dash.URL())
	}
	t0 := time.Now()
	binDir := tmp
	var bins map[string]string
	if o.prebuilt != "" {
		binDir = o.prebuilt
		if bins, err = prebuilt(o.prebuilt); err != nil {
			return err
		}
	} else {
		d.setPhase("building")
		d.printf("%s building the services: go build %s (seconds with a warm build cache; a first build compiles every dependency, a minute or more)\n",
			d.clock(), strings.Join(services, ", "))
		if bins, err = d.buildWithProgress(ctx, tmp); err != nil {
			return err
		}
		d.printf("%s built in %.1fs\n", d.clock(), time.Since(t0).Seconds())
		d.setPhase("starting")
	}

	reg, err := startRegistry(ctx, o)
	if err != nil {
		return err
	}
	defer func() { _ = reg.Close() }()
	d.printf("%s registry: %s, services use it at %s\n", d.clock(), reg.Kind(), reg.Addr())
	regView, err := newRegistryWatcher(reg)
	if err != nil {
		return err
	}

	extra := map[string][]string{}
	chaosToken := randomHex(16)
	extra["pricing"] = []string{"CHAOS_ENABLED=true", "CHAOS_TOKEN=" + chaosToken}
	var iss *issuer
	if o.auth {
		if iss, err = newIssuer(tmp); err != nil {
			return err
		}
		extra["gateway"] = iss.gatewayEnv()
	}
	cl := newCluster(bins, baseEnv(reg.Env()), extra)
	// From here on, every child is stopped however run returns.
	defer cl.stopAll(stopGrace) // a no-op after the orderly stop below
	d.phaseMu.Lock()
	d.reg, d.regView, d.cl, d.scr = reg, regView, cl, newScraper()
	d.phaseMu.Unlock()
	bg, stopBG := context.WithCancel(context.Background())
	var bgWG sync.WaitGroup
	defer func() { stopBG(); bgWG.Wait() }()
	bgWG.Go(func() { d.observeLoop(bg) })

	t0 = time.Now()
	if err := d.startAll(ctx); err != nil {
		return err
	}
	d.printf("%s %d instances ready in %.1fs\n", d.clock(), len(d.cl.live("")), time.Since(t0).Seconds())

	if d.edge, err = newEdge(d.reg); err != nil {
		return err
	}
	defer func() { _ = d.edge.Close() }()
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ids, err := productIDs(readyCtx, d.edge.client, "gateway")
	cancel()
	if err != nil {
		return err
	}
	// The load and the chaos schedule.
	start := time.Now()
	st := newStats(start)
	load, err := newLoadGen(d.edge.client, st, o.rate, o.users, ids, iss, o.seed)
	if err != nil {
		return err
	}
	ch := newChaos(d.cl, d.reg, load, st, d.tl, chaosToken, o.seed)
	d.tl.begin(start)
	d.phaseMu.Lock()
	d.start, d.load, d.ch, d.phase = start, load, ch, "running"
	d.phaseMu.Unlock()
	d.printf("%s load: %.0f requests/s over %d users, seed %d\n", d.clock(), o.rate, o.users, o.seed)
	runCtx, stopRun := context.WithCancel(ctx)
	if o.duration > 0 {
		runCtx, stopRun = context.WithTimeout(ctx, o.duration)
	}
	defer stopRun()
	var runWG sync.WaitGroup
	if o.chaos {
		period, repeat := chaosPeriod(o)
		runWG.Go(func() { ch.run(runCtx, start, period, repeat) })
	}
	runWG.Go(func() { load.run(runCtx, "gateway") })
	var sk *soak
	if o.soak.on {
		sk = newSoak(o.soak, d.cl, d.reg, d.scr, start)
		runWG.Go(func() { sk.run(runCtx) })
	}
	runWG.Wait()
	ch.wg.Wait() // actions the dashboard started
	end := time.Now()
	if ctx.Err() != nil {
		d.printf("\n%s interrupted\n", d.clock())
	}

	d.setPhase("stopping")
	d.printf("%s stopping every instance (SIGTERM, SIGKILL after %s)...\n", d.clock(), stopGrace)
	t0 = time.Now()
	stopped, killed := d.cl.stopAll(stopGrace)
	sum := d.summary(end)
	sum.BinDir = binDir
	sum.Shutdown = Shutdown{Stopped: stopped, Killed: killed, Seconds: roundTo(time.Since(t0).Seconds(), 0.1), Interrupted: ctx.Err() != nil}
	d.setPhase("done")
	if d.dash != nil {
		d.dash.broadcast()
	}
	printSummary(d.out, sum)
	var soakErr error
	if sk != nil {
		rep := sk.report(sum)
		sum.Soak = &rep
		soakErr = d.finishSoak(rep)
	}
	if o.summaryJSON != "" {
		if err := writeJSON(o.summaryJSON, sum); err != nil {
			return err
		}
	}
	return soakErr
}

// chaosPeriod is the chaos schedule's period and whether it repeats: -chaos-every if set, else once
// over -duration, or every cycle until Ctrl-C.
func chaosPeriod(o options) (time.Duration, bool) {
	switch {
	case o.chaosEvery > 0:
		return o.chaosEvery, true
	case o.duration > 0:
		return o.duration, false
	default:
		return cycle, true
	}
}

func describeRun(o options) string {
	s := "until Ctrl-C"
	if o.duration > 0 {
		s = "for " + o.duration.String()
	}
	if o.chaos {
		s += ", chaos on"
	} else {
		s += ", chaos off"
	}
	return s
}

func startRegistry(ctx context.Context, o options) (registry, error) {
	switch {
	case o.registry == "etcd":
		bin, err := findBinary(o.goTool, "etcd")
		if err != nil {
			return nil, err
		}
		return startLocalEtcd(ctx, bin)
	case o.consul == "local":
		bin, err := findBinary(o.goTool, "consul")
		if err != nil {
			return nil, err
		}
		return startLocalConsul(ctx, bin)
	case os.Getenv("CONSUL_HTTP_ADDR") != "":
		addr := os.Getenv("CONSUL_HTTP_ADDR")
		addr = strings.TrimPrefix(strings.TrimPrefix(addr, "http://"), "https://")
		return useConsul(addr)
	default:
		return startEmbedded()
	}
}

// startAll starts -instances of every service, callees first, the instances of one service at once.
func (d *demo) startAll(ctx context.Context) error {
	for _, s := range services {
		var wg sync.WaitGroup
		errs := make([]error, d.o.instances)
		for i := range d.o.instances {
			wg.Go(func() {
				p, err := d.cl.start(ctx, s)
				errs[i] = err
				if err == nil {
					d.tl.add(Event{Kind: EventStart, Target: p.ID, Detail: fmt.Sprintf("%s ready at %s (admin %s)", p.ID, p.snapshot().Addr, p.snapshot().AdminAddr)})
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	return nil
}

// buildWithProgress builds the services and says every 15 s that it still does, so that a first
// build on a cold cache is not a silent minute.
func (d *demo) buildWithProgress(ctx context.Context, dir string) (map[string]string, error) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(done)
	t0 := time.Now()
	wg.Go(func() {
		tick := time.NewTicker(15 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				d.printf("%s still building (%.0fs so far; the go build cache makes the next run fast)\n", d.clock(), time.Since(t0).Seconds())
			}
		}
	})
	return build(ctx, d.o.goTool, dir)
}

// onEvent prints timeline events as they happen.
func (d *demo) onEvent(e Event) {
	switch {
	case e.Done:
		d.printf("%s   ↳ %s: %s\n", d.clock(), e.Kind, e.Reaction)
	default:
		d.printf("%s %-16s %s\n", d.clock(), e.Kind, e.Detail)
	}
	if d.dash != nil {
		go d.dash.broadcast()
	}
}

// observeLoop scrapes the instances, polls the registry, keeps the Prometheus targets file, updates
// the dashboard every second and prints progress every five.
func (d *demo) observeLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		targets := map[string]string{}
		for _, p := range d.cl.live("") {
			if in := p.snapshot(); in.AdminAddr != "" {
				targets[in.ID] = in.AdminAddr
			}
		}
		d.scr.round(ctx, targets)
		d.regView.poll(ctx)
		start, load, _ := d.running()
		if load != nil {
			sh := load.stats.takeShare()
			d.shareMu.Lock()
			d.share = sh
			d.shareMu.Unlock()
		}
		if d.o.promTargets != "" {
			if err := writePromTargets(d.o.promTargets, d.cl.live("")); err != nil && n == 0 {
				d.printf("%s prom-targets: %v\n", d.clock(), err)
			}
		}
		if d.dash != nil {
			d.dash.broadcast()
		}
		n++
		if n%5 == 0 && !start.IsZero() {
			d.progress(load)
		}
	}
}

func (d *demo) progress(load *loadGen) {
	t := load.stats.totals()
	ready := 0
	for _, p := range d.cl.live("") {
		if p.snapshot().State == StateReady {
			ready++
		}
	}
	d.printf("%s %d requests, %.2f%% ok (idempotent %.3f%%), p50 %.1fms p99 %.1fms, %.0f req/s, %d instances up\n",
		d.clock(), t.Requests, 100*t.SuccessRate, 100*t.IdempotentRate, t.P50Ms, t.P99Ms, load.Rate(), ready)
}

// state assembles the dashboard document. It is called from the dashboard's first request on, also
// while the services build and start, when the registry and the cluster may not exist yet.
func (d *demo) state() State {
	s := State{Now: time.Now(), Duration: d.o.duration.Seconds(), Chaos: d.o.chaos, Services: services}
	d.phaseMu.Lock()
	s.Phase = d.phase
	reg, regView, cl, scr := d.reg, d.regView, d.cl, d.scr
	d.phaseMu.Unlock()
	start, load, _ := d.running()
	if !start.IsZero() {
		s.Elapsed = roundTo(time.Since(start).Seconds(), 0.1)
		s.LoadStart = start.UnixMilli()
	}
	switch {
	case regView != nil:
		s.Registry = regView.get()
	case reg != nil:
		s.Registry = RegistryView{Kind: reg.Kind(), Addr: reg.Addr()}
	}
	d.shareMu.Lock()
	share := d.share
	d.shareMu.Unlock()
	if cl != nil && scr != nil {
		for _, in := range cl.instances() {
			s.Instances = append(s.Instances, instanceView(in, scr.metrics(in.ID), share, s.Registry))
		}
	}
	if load != nil {
		s.Load = LoadView{Rate: load.Rate(), Inflight: load.inflight.Load(), Totals: load.stats.totals(), Series: load.stats.window(120)}
		s.Load.Totals.ErrorSamples = nil
	}
	s.Events = d.tl.list()
	return s
}

// instanceView is one instance as the dashboard shows it: its metrics from the last scrapes, its
// share of its service's responses in the last second and its registry status. An instance that was
// killed or has exited serves nothing: it shows no share, rate or latency, whatever its last scrape
// and the last second said.
func instanceView(in InstanceInfo, m InstanceMetrics, share map[string]map[string]int, reg RegistryView) InstanceView {
	v := InstanceView{InstanceInfo: in, InstanceMetrics: m, Live: in.State != StateKilled && in.State != StateExited}
	if !v.Live {
		v.InstanceMetrics = InstanceMetrics{}
	} else {
		total := 0
		for _, c := range share[in.Service] {
			total += c
		}
		if total > 0 {
			v.Share = roundTo(float64(share[in.Service][in.ID])/float64(total), 0.001)
		}
	}
	for _, it := range reg.Services[in.Service] {
		if it.Instance == in.ID {
			v.Registered = it.Status
		}
	}
	return v
}

// act is the dashboard's chaos button.
func (d *demo) act(ctx context.Context) func(action, target string) error {
	return func(action, target string) error {
		_, _, ch := d.running()
		if ch == nil {
			return errors.New("the cluster is still starting")
		}
		return ch.act(ctx, action, target)
	}
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writePromTargets writes a Prometheus file_sd document: one target group per instance, labelled
// with its service and instance id. It replaces the file atomically, as file_sd expects.
func writePromTargets(path string, live []*proc) error {
	type group struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	groups := []group{}
	for _, p := range live {
		in := p.snapshot()
		if in.AdminAddr == "" {
			continue
		}
		groups = append(groups, group{Targets: []string{in.AdminAddr}, Labels: map[string]string{"service": in.Service, "instance_id": in.ID, "job": "chassis-demo"}})
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].Labels["instance_id"] < groups[j].Labels["instance_id"] })
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return writeJSON(path, groups)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
