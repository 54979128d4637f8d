package haproxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/deploy/haproxy"
	"github.com/cloudchassis/kit/internal/consultest"
	"github.com/cloudchassis/kit/internal/syncbuf"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// instance is one Chassis service process-alike: a chassis.Service running in this process,
// registered in Consul, stopped the way SIGTERM stops it (its context is cancelled: readiness 503,
// deregistration, DRAIN_DELAY, then the drain of in-flight requests).
type instance struct {
	name string
	stop context.CancelFunc
	done chan error
}

func startInstance(t *testing.T, n int, env map[string]string) *instance {
	t.Helper()
	name := fmt.Sprintf("shop-%d", n)
	// Each instance on its own loopback address, as on its own host: HAProxy 2.6 fills only one
	// server slot per SRV target name, and Consul names a target after its address.
	m := map[string]string{"PORT": "0", "ADMIN_PORT": "0", "HOST": fmt.Sprintf("127.0.0.%d", n+1), "LOG_LEVEL": "error", "ACCESS_LOG": "false",
		"DISCOVERY": "consul"}
	for k, v := range env {
		m[k] = v
	}
	svc, err := chassis.New("shop", chassis.WithEnv(config.MapLookup(m)))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond) // requests are in progress when the instance drains
		_, _ = io.WriteString(w, name)
	})
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{name: name, stop: cancel, done: make(chan error, 1)}
	go func() { in.done <- svc.Run(ctx) }()
	select {
	case <-svc.Ready():
	case err := <-in.done:
		t.Fatalf("%s ended before ready: %v", name, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not ready after 20s", name)
	}
	t.Cleanup(func() { cancel(); <-in.done })
	return in
}

// dnsOnly removes HAProxy's own safety net from a configuration: no retry of refused connections,
// no redispatch, no active check. What is left is the routing Consul's DNS gives, which is what the
// drain's arithmetic is about.
func dnsOnly(cfg string) string {
	cfg = strings.Replace(cfg, "retries 3", "retries 0", 1)
	cfg = strings.Replace(cfg, "option redispatch 1", "no option redispatch", 1)
	return strings.Replace(cfg, " check inter 1s fall 1 rise 1", "", 1)
}

// startHAProxy runs haproxy in the foreground with c, edited by edit if not nil, until the test ends.
func startHAProxy(t *testing.T, c haproxy.Config, edit func(string) string) {
	t.Helper()
	bin := haproxyBin(t)
	path := writeConfig(t, c)
	if edit != nil {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(edit(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logs := &syncbuf.Buffer{}
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("haproxy output:\n%s", logs.String())
		}
	})
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// plainClient never retries: a new connection per request (no reused connection that Go's
// transport would retry on), no redirects followed.
func plainClient() *http.Client {
	return &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true},
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// waitServed waits until HAProxy has routed a request to each of names.
func waitServed(t *testing.T, url string, names ...string) {
	t.Helper()
	c := plainClient()
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if res, err := c.Get(url); err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == 200 {
				seen[string(b)] = true
			}
		}
		all := true
		for _, n := range names {
			all = all && seen[n]
		}
		if all {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("HAProxy did not route to all of %v within 30s (seen %v)", names, seen)
}

// openLoad sends GETs at a fixed rate whatever the answers take (open loop), never retrying.
type openLoad struct {
	sent, ok atomic.Int64
	mu       sync.Mutex
	failures map[string]int // by reason
	stop     context.CancelFunc
	done     chan struct{}
}

// maxInFlight bounds the generator: beyond it a request counts as failed rather than piling up.
const maxInFlight = 2000

func startOpenLoad(url string, rate int) *openLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &openLoad{failures: map[string]int{}, stop: cancel, done: make(chan struct{})}
	c := plainClient()
	go func() {
		defer close(l.done)
		var wg sync.WaitGroup
		defer wg.Wait()
		var inFlight atomic.Int64
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			l.sent.Add(1)
			if inFlight.Load() >= maxInFlight {
				l.fail("generator saturated")
				continue
			}
			inFlight.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer inFlight.Add(-1)
				res, err := c.Get(url)
				if err != nil {
					l.fail(err.Error())
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusOK {
					l.fail(res.Status)
					return
				}
				l.ok.Add(1)
			}()
		}
	}()
	return l
}

func (l *openLoad) fail(reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures[reason]++
}

// finish stops sending, waits for the answers and returns the failures.
func (l *openLoad) finish() (failed int, reasons map[string]int) {
	l.stop()
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.failures {
		failed += n
	}
	return failed, l.failures
}

// edgeRun is one rolling restart behind HAProxy.
type edgeRun struct {
	env     map[string]string // the instances' settings beyond the base
	dnsOnly bool              // HAProxy without retries, redispatch and active checks (see dnsOnly)
	// deregFails cuts the instances off their agent's HTTP API while they drain: deregistration
	// fails and only Consul's check of /readyz takes the instance out.
	deregFails bool
}

// rollingRestart starts a Consul agent, 3 Chassis instances of "shop" registered in it and HAProxy
// finding them through Consul's DNS, then replaces the instances one by one (stop, wait for the
// drain, start the replacement, wait until HAProxy routes to it) under 200 requests per second of
// open-loop load. It returns how many requests were sent and how many failed, and why.
func rollingRestart(t *testing.T, run edgeRun) (sent int64, failed int, reasons map[string]int) {
	t.Helper()
	agent := consultest.StartDev(t)
	api := consultest.NewProxy(t, agent.HTTPAddr)
	env := map[string]string{"CONSUL_HTTP_ADDR": api.Addr()}
	for k, v := range run.env {
		env[k] = v
	}
	var live []*instance
	var names []string
	for i := range 3 {
		live = append(live, startInstance(t, i, env))
		names = append(names, live[i].name)
	}
	listen := freeAddr(t)
	var edit func(string) string
	if run.dnsOnly {
		edit = dnsOnly
	}
	startHAProxy(t, haproxy.Config{Listen: listen, DNS: agent.DNSAddr, Service: "shop"}, edit)
	url := "http://" + listen + "/"
	waitServed(t, url, names...)

	load := startOpenLoad(url, 200)
	time.Sleep(time.Second)
	for i := range live {
		begin := time.Now()
		if run.deregFails {
			api.Down()
		}
		live[i].stop()
		if err := <-live[i].done; err != nil && !errors.Is(err, context.Canceled) && !run.deregFails {
			t.Errorf("%s: Run: %v", live[i].name, err)
		}
		live[i].done <- nil // for the cleanup
		api.Up()
		old := live[i].name
		live[i] = startInstance(t, i+3, env)
		waitServed(t, url, live[i].name)
		t.Logf("replaced %s by %s in %v", old, live[i].name, time.Since(begin).Round(time.Millisecond))
	}
	time.Sleep(time.Second)
	failed, reasons = load.finish()
	return load.sent.Load(), failed, reasons
}

func edgeIntegration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs Consul, HAProxy and three services; skipped with -short")
	}
	haproxyBin(t)
	out, _ := exec.Command(haproxyBin(t), "-v").Output()
	t.Logf("%s", strings.SplitN(string(out), "\n", 2)[0])
}

// TestRollingRestartBehindHAProxy is the edge's zero-loss drain with every default (DRAIN_DELAY 5s,
// Consul registration and check, the committed haproxy.cfg.tmpl), and again with HAProxy's retries,
// redispatch and active checks removed: the drain alone, through Consul's DNS, must lose nothing,
// even when deregistration fails and Consul's check (CONSUL_CHECK_INTERVAL 2s) is what takes the
// instance out.
func TestRollingRestartBehindHAProxy(t *testing.T) {
	edgeIntegration(t)
	for _, tc := range []struct {
		name string
		run  edgeRun
	}{
		{"template", edgeRun{}},
		{"dns-only", edgeRun{dnsOnly: true}},
		{"dns-only, deregistration fails", edgeRun{dnsOnly: true, deregFails: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent, failed, reasons := rollingRestart(t, tc.run)
			t.Logf("%s, defaults: %d requests, %d failed %v", tc.name, sent, failed, reasons)
			if sent < 2000 {
				t.Errorf("only %d requests sent: the load did not run during the restart", sent)
			}
			if failed != 0 {
				t.Errorf("%d of %d requests failed behind HAProxy during a rolling restart with the defaults: %v", failed, sent, reasons)
			}
		})
	}
}

// TestRollingRestartBehindHAProxyShortDrain shows what a drain shorter than the edge's view of the
// registry costs: DRAIN_DELAY=0s, and a Consul check slower than the drain when deregistration
// fails. It logs the failures and asserts nothing about them. With the
// template's retries and redispatch HAProxy hides most of it; without them (dns-only) the figure is
// what the drain delay is for.
func TestRollingRestartBehindHAProxyShortDrain(t *testing.T) {
	edgeIntegration(t)
	for _, tc := range []struct {
		name string
		run  edgeRun
	}{
		{"template", edgeRun{env: map[string]string{"DRAIN_DELAY": "0s"}}},
		{"dns-only", edgeRun{env: map[string]string{"DRAIN_DELAY": "0s"}, dnsOnly: true}},
		// Deregistration fails and Consul's check is slower than the drain: CONSUL_CHECK_INTERVAL=10s.
		{"dns-only, deregistration fails, check 10s", edgeRun{env: map[string]string{"CONSUL_CHECK_INTERVAL": "10s"}, dnsOnly: true, deregFails: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sent, failed, reasons := rollingRestart(t, tc.run)
			t.Logf("%s: %d requests, %d failed (%.2f%%) %v", tc.name, sent, failed, 100*float64(failed)/float64(max(sent, 1)), reasons)
		})
	}
}
