// Command polyglot runs the other two ways to reach a service (issue 19) on a real Consul agent,
// under load, through a rolling restart and a crash:
//
//   - a service in another language behind ambassadors: three `python3 -m http.server` processes
//     ("legacy"), each with a cmd/ambassador beside it that registers it in Consul with a health
//     check through the ambassador, and a caller-side ambassador that plain clients call at
//     http://127.0.0.1:<port>/legacy/... (balancing, retries under a budget, breakers, deadlines);
//   - HAProxy as the front door of a Chassis service: three examples/hello instances, found by
//     HAProxy through Consul's DNS interface (deploy/haproxy's template).
//
// A plain HTTP client that never retries sends an open-loop load to both front doors. A quarter in,
// one python backend is SIGKILLed; from a third in, the hello instances restart one by one (SIGTERM,
// drain, start a new one). At the end it prints what each front door answered and fails if any request
// failed. From the repository root (Consul, HAProxy and python3 installed by scripts/install-tools.sh):
//
//	go run ./examples/polyglot                       # 30 s at 100 requests/s
//	go run ./examples/polyglot -duration 2m -rate 200
//
// docs/demo.md, "Polyglot: the ambassador and HAProxy", explains what to look for.
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
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudchassis/kit/deploy/haproxy"
	"github.com/cloudchassis/kit/internal/consultest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "polyglot:", err)
		os.Exit(1)
	}
}

type options struct {
	duration time.Duration
	rate     float64
	goTool   string
}

func parseFlags(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("polyglot", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "how long the load runs (at least 10s: the crash and the rolling restart happen in it)")
	fs.Float64Var(&o.rate, "rate", 100, "requests per second, half to each front door (open loop)")
	fs.StringVar(&o.goTool, "go", "go", "the go command that builds hello and the ambassador")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var errs []error
	if o.duration < 10*time.Second {
		errs = append(errs, errors.New("-duration must be at least 10s"))
	}
	if !(o.rate > 0 && o.rate <= 5000) {
		errs = append(errs, errors.New("-rate must be in (0, 5000]"))
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	return o, errors.Join(errs...)
}

// run is the whole demo; consultest.Run gives it a real Consul agent and cleans everything up.
func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parseFlags(args, out)
	if err != nil {
		return err
	}
	for _, tool := range []string{"python3", "haproxy"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: run bash scripts/install-tools.sh (or install-python.sh / install-haproxy.sh)", tool)
		}
	}
	var result error
	err = consultest.Run(func(t consultest.TB) { result = demo(ctx, t, o, out) })
	return errors.Join(err, result)
}

func demo(ctx context.Context, t consultest.TB, o options, out io.Writer) error {
	dir := t.TempDir()
	fmt.Fprintf(out, "building hello and the ambassador...\n")
	build := exec.CommandContext(ctx, o.goTool, "build", "-o", dir+"/", "./examples/hello", "./cmd/ambassador")
	build.Stdout, build.Stderr = out, out
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build (run from the repository root): %w", err)
	}
	agent := consultest.StartDev(t)
	fmt.Fprintf(out, "consul agent: HTTP %s, DNS %s\n", agent.HTTPAddr, agent.DNSAddr)
	common := []string{"DISCOVERY=consul", "CONSUL_HTTP_ADDR=" + agent.HTTPAddr,
		"LOG_LEVEL=warn", "ACCESS_LOG=false", "OTEL_TRACES_EXPORTER=none", "OTEL_LOGS_EXPORTER=none"}
	pm := &procs{t: t, dir: dir}

	// legacy: python3 http.server, each with an ambassador that registers it.
	www := filepath.Join(dir, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(www, "index.txt"), []byte("legacy ok\n"), 0o644); err != nil {
		return err
	}
	var pythons []*proc
	for i := range 3 {
		port := freePort(t, "127.0.0.1")
		py, err := pm.start(ctx, fmt.Sprintf("python-%d", i+1), "", "python3", []string{"-m", "http.server", strconv.Itoa(port),
			"--bind", "127.0.0.1", "--directory", www}, nil)
		if err != nil {
			return err
		}
		pythons = append(pythons, py)
		if _, err := pm.start(ctx, fmt.Sprintf("ambassador-%d", i+1), "127.0.0.1", filepath.Join(dir, "ambassador"), nil,
			append(common, "AMBASSADOR_LOCAL_NAME=legacy", "AMBASSADOR_LOCAL_ADDR=127.0.0.1:"+strconv.Itoa(port),
				"AMBASSADOR_LOCAL_HEALTH=/index.txt")); err != nil {
			return err
		}
	}
	caller, err := pm.start(ctx, "ambassador-caller", "127.0.0.1", filepath.Join(dir, "ambassador"), nil,
		append(common, "AMBASSADOR_ROUTES=legacy", "REGISTER=false"))
	if err != nil {
		return err
	}

	// hello: three Chassis instances, each on its own loopback address (HAProxy 2.6 fills one server
	// slot per SRV target name, and Consul names a target after its address).
	hellos := make([]*proc, 3)
	startHello := func(i int) error {
		p, err := pm.start(ctx, fmt.Sprintf("hello-%d", i+1), fmt.Sprintf("127.0.0.%d", i+2), filepath.Join(dir, "hello"), nil, common)
		hellos[i] = p
		return err
	}
	for i := range hellos {
		if err := startHello(i); err != nil {
			return err
		}
	}
	edge := "127.0.0.1:" + strconv.Itoa(freePort(t, "127.0.0.1"))
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	f, err := os.Create(cfgPath)
	if err != nil {
		return err
	}
	err = haproxy.Config{Listen: edge, DNS: agent.DNSAddr, Service: "hello"}.Write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if _, err := pm.start(ctx, "haproxy", "", "haproxy", []string{"-db", "-f", cfgPath}, nil); err != nil {
		return err
	}
	targets := []*target{
		{name: "HAProxy → hello (Chassis)", url: "http://" + edge + "/hello/world"},
		{name: "ambassador → legacy (python3)", url: "http://" + caller.public + "/legacy/index.txt"},
	}
	for _, tg := range targets {
		if err := waitOK(ctx, tg.url, 30*time.Second); err != nil {
			return fmt.Errorf("%s: %w", tg.name, err)
		}
	}
	fmt.Fprintf(out, "front doors: HAProxy http://%s/hello/world, ambassador http://%s/legacy/index.txt\n", edge, caller.public)
	fmt.Fprintf(out, "load: %.0f requests/s for %s from a client that never retries\n", o.rate, o.duration)

	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { load(runCtx, targets, o.rate) })
	start := time.Now()
	sleepUntil(runCtx, start.Add(o.duration/4))
	if runCtx.Err() == nil {
		fmt.Fprintf(out, "[%5.1fs] SIGKILL python-1 (its ambassador's /readyz fails; Consul's check takes it out)\n", time.Since(start).Seconds())
		pythons[0].kill()
	}
	sleepUntil(runCtx, start.Add(o.duration/3))
	for i := range hellos {
		if runCtx.Err() != nil {
			break
		}
		fmt.Fprintf(out, "[%5.1fs] rolling restart: SIGTERM hello-%d\n", time.Since(start).Seconds(), i+1)
		hellos[i].terminate(20 * time.Second)
		if err := startHello(i); err != nil {
			cancel()
			wg.Wait()
			return err
		}
	}
	wg.Wait()
	fmt.Fprintf(out, "\n| front door | requests | failed |\n|---|---:|---:|\n")
	var failed int64
	for _, tg := range targets {
		fmt.Fprintf(out, "| %s | %d | %d |\n", tg.name, tg.sent.Load(), tg.failed.Load())
		failed += tg.failed.Load()
		if e := tg.firstErr.Load(); e != nil {
			fmt.Fprintf(out, "  first failure: %s\n", *e)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if failed > 0 {
		return fmt.Errorf("%d requests failed", failed)
	}
	fmt.Fprintln(out, "\nno request failed")
	return nil
}

// target is one front door under load.
type target struct {
	name     string
	url      string
	sent     atomic.Int64
	failed   atomic.Int64
	firstErr atomic.Pointer[string]
}

// load sends an open-loop load: one request every 1/rate seconds, alternating between the targets,
// each on its own goroutine (bounded: at most 512 in flight, beyond which a request counts as
// failed), from a client that never retries.
func load(ctx context.Context, targets []*target, rate float64) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	sem := make(chan struct{}, 512)
	var wg sync.WaitGroup
	defer wg.Wait()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		tg := targets[n%len(targets)]
		tg.sent.Add(1)
		select {
		case sem <- struct{}{}:
		default:
			tg.fail("more than 512 requests in flight")
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			// Its own deadline, not the load's: a request sent before the end is waited for.
			rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(rctx, http.MethodGet, tg.url, nil)
			resp, err := client.Do(req)
			if err != nil {
				tg.fail(err.Error())
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				tg.fail(resp.Status)
			}
		})
	}
}

func (tg *target) fail(why string) {
	tg.failed.Add(1)
	tg.firstErr.CompareAndSwap(nil, &why)
}

func sleepUntil(ctx context.Context, at time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(at)):
	}
}

// waitOK polls url until it answers 200.
func waitOK(ctx context.Context, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		resp, err := http.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no 200 from %s within %s (last: %s)", url, timeout, last)
}

func freePort(t consultest.TB, host string) int {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// procs starts the demo's processes; each is stopped in the TB's cleanup.
type procs struct {
	t   consultest.TB
	dir string
}

// proc is one child process.
type proc struct {
	name   string
	public string // a Chassis process' public address
	cmd    *exec.Cmd
	done   chan struct{}
}

// start starts a process. A Chassis process (host set) gets PORT and ADMIN_PORT on host, and start
// waits for its /readyz; another waits a moment for its port.
func (pm *procs) start(ctx context.Context, name, host, bin string, args, env []string) (*proc, error) {
	p := &proc{name: name, done: make(chan struct{})}
	cmd := exec.Command(bin, args...)
	var admin string
	if host != "" {
		p.public = net.JoinHostPort(host, strconv.Itoa(freePort(pm.t, host)))
		admin = net.JoinHostPort(host, strconv.Itoa(freePort(pm.t, host)))
		_, port, _ := net.SplitHostPort(p.public)
		_, aport, _ := net.SplitHostPort(admin)
		cmd.Env = append(append(os.Environ(), env...), "HOST="+host, "PORT="+port, "ADMIN_PORT="+aport, "INSTANCE_ID="+name,
			"SERVICE_META=instance_id:"+name)
	}
	logf, err := os.Create(filepath.Join(pm.dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	detach(cmd)
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.cmd = cmd
	go func() { _ = cmd.Wait(); _ = logf.Close(); close(p.done) }()
	pm.t.Cleanup(func() { p.terminate(15 * time.Second) })
	if host == "" {
		select {
		case <-p.done:
			return nil, fmt.Errorf("%s exited at once (log: %s)", name, logf.Name())
		case <-time.After(500 * time.Millisecond):
		}
		return p, nil
	}
	if err := waitOK(ctx, "http://"+admin+"/readyz", 30*time.Second); err != nil {
		return nil, fmt.Errorf("%s not ready (log: %s): %w", name, logf.Name(), err)
	}
	return p, nil
}

// terminate sends SIGTERM and waits for the exit, SIGKILL after grace.
func (p *proc) terminate(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}
