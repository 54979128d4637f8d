package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/internal/consultest"
)

// python is one instance of testdata/backend.py: a backend in another language than Go.
type python struct {
	cmd  *exec.Cmd
	addr string
	port string
	done chan struct{}
}

// startPython starts testdata/backend.py answering after delay seconds, and waits for its port.
// The test skips when no python3 is on PATH (scripts/install-python.sh installs one in CI).
func startPython(t *testing.T, delay string) *python {
	t.Helper()
	bin, err := exec.LookPath("python3")
	if err == nil {
		err = exec.Command(bin, "-c", "import http.server").Run()
	}
	if err != nil {
		t.Skipf("no non-Go HTTP server to test against: python3 with http.server is not on PATH (%v); bash scripts/install-python.sh installs it", err)
	}
	cmd := exec.Command(bin, "testdata/backend.py", delay)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &python{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(s)
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case p.port = <-line:
	case <-time.After(20 * time.Second):
		t.Fatal("backend.py did not print its port within 20s")
	}
	if p.port == "" {
		t.Fatal("backend.py exited before listening")
	}
	p.addr = net.JoinHostPort("127.0.0.1", p.port)
	return p
}

// kill sends SIGKILL and waits until the process is gone.
func (p *python) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// load is a plain client's steady load: workers that each send a GET, then wait pace, until stopped.
// The client never retries; every answer but a 200 is a failure.
type load struct {
	mu       sync.Mutex
	served   map[string]int // backend port -> answers
	failures []string
	total    int
	lat      []time.Duration

	stop chan struct{}
	wg   sync.WaitGroup
}

func startLoad(url string, workers int, pace time.Duration) *load {
	l := &load{served: map[string]int{}, stop: make(chan struct{})}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}, Timeout: 10 * time.Second}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer client.CloseIdleConnections()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				start := time.Now()
				resp, err := client.Get(url)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				l.record(resp, body, err, time.Since(start))
				if pace > 0 {
					time.Sleep(pace)
				}
			}
		}()
	}
	return l
}

func (l *load) record(resp *http.Response, body []byte, err error, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	l.lat = append(l.lat, took)
	switch {
	case err != nil:
		l.failures = append(l.failures, err.Error())
	case resp.StatusCode != http.StatusOK:
		l.failures = append(l.failures, fmt.Sprintf("%d %s", resp.StatusCode, body))
	default:
		port, _, _ := strings.Cut(string(body), " ")
		l.served[port]++
	}
}

func (l *load) end() {
	close(l.stop)
	l.wg.Wait()
}

func (l *load) snapshot() (total int, served map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	served = map[string]int{}
	for k, v := range l.served {
		served[k] = v
	}
	return l.total, served
}

func (l *load) median() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := append([]time.Duration(nil), l.lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func addrs(ps ...*python) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.addr)
	}
	return strings.Join(out, ",")
}

// TestSIGKILLOfOneInstanceLosesNoIdempotentRequest: three python instances behind the ambassador
// under steady load from a plain client; one is killed with SIGKILL. The requests it held and the
// picks that land on it before it is ejected are retried on the others: the client sees no failure.
func TestSIGKILLOfOneInstanceLosesNoIdempotentRequest(t *testing.T) {
	ps := []*python{startPython(t, "0"), startPython(t, "0"), startPython(t, "0")}
	amb := startAmbassador(t, testEnv("AMBASSADOR_ROUTES", "py", "DISCOVERY_STATIC_PY", addrs(ps...)))
	l := startLoad(amb.url+"/py/item", 6, 5*time.Millisecond)
	time.Sleep(1500 * time.Millisecond)
	before, servedBefore := l.snapshot()
	ps[0].kill()
	time.Sleep(2500 * time.Millisecond)
	l.end()
	total, served := l.snapshot()
	t.Logf("%d requests (%d before the kill), served by port: %v, median %v", total, before, served, l.median())
	if len(l.failures) > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", len(l.failures), total, l.failures[0])
	}
	if servedBefore[ps[0].port] == 0 {
		t.Fatalf("the killed instance served nothing before the kill (%v): the test proves nothing", servedBefore)
	}
	if total-before < 100 {
		t.Fatalf("only %d requests after the kill: the load did not run", total-before)
	}
	for _, p := range ps[1:] {
		if served[p.port] <= servedBefore[p.port] {
			t.Errorf("instance %s served nothing after the kill", p.port)
		}
	}
}

// TestSlowInstanceIsSteeredAround: one of three python instances answers 100 ms late; the
// ambassador's P2C balancer sends it only a small share of the load.
func TestSlowInstanceIsSteeredAround(t *testing.T) {
	slow := startPython(t, "0.1")
	ps := []*python{startPython(t, "0"), startPython(t, "0"), slow}
	amb := startAmbassador(t, testEnv("AMBASSADOR_ROUTES", "py", "DISCOVERY_STATIC_PY", addrs(ps...)))
	l := startLoad(amb.url+"/py/item", 4, 0)
	time.Sleep(3 * time.Second)
	l.end()
	total, served := l.snapshot()
	share := float64(served[slow.port]) / float64(total)
	t.Logf("%d requests, served by port: %v (slow %s: %.1f%%), median %v", total, served, slow.port, 100*share, l.median())
	if len(l.failures) > 0 {
		t.Fatalf("%d requests failed, first: %s", len(l.failures), l.failures[0])
	}
	if total < 200 {
		t.Fatalf("only %d requests in 3s", total)
	}
	// Round robin would send it a third; P2C sends it a request only when it is one of the two
	// instances drawn and the other looks worse, which its 100 ms rarely allows.
	if share > 0.05 {
		t.Fatalf("the slow instance got %.1f%% of the requests, want at most 5%%", 100*share)
	}
}

// TestConsulRegistrationAndDiscovery: ambassador A registers a python service in a real Consul agent,
// with its check on A's /readyz; ambassador B (AMBASSADOR_ROUTES=*) finds it through Consul and
// forwards to it. When A drains, the service leaves Consul and B stops reaching it.
func TestConsulRegistrationAndDiscovery(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no Consul agent")
	}
	py := startPython(t, "0")
	agent := consultest.StartDev(t)
	consulEnv := []string{"DISCOVERY", "consul", "CONSUL_HTTP_ADDR", agent.HTTPAddr}
	a := startAmbassador(t, testEnv(append(consulEnv, "AMBASSADOR_LOCAL_NAME", "pyapp", "AMBASSADOR_LOCAL_ADDR", py.addr,
		"AMBASSADOR_LOCAL_HEALTH", "/health", "AMBASSADOR_LOCAL_ADVERTISE", "127.0.0.1", "SERVICE_TAGS", "python,v1")...))
	b := startAmbassador(t, testEnv(append(consulEnv, "AMBASSADOR_ROUTES", "*", "AMBASSADOR_CATALOG_REFRESH", "100ms")...))

	entries, _, err := agent.Client.Health().Service("pyapp", "", true, nil)
	if err != nil || len(entries) != 1 {
		t.Fatalf("passing pyapp instances: %d, %v; want 1", len(entries), err)
	}
	e := entries[0]
	if e.Service.Address != "127.0.0.1" || fmt.Sprint(e.Service.Port) != py.port || strings.Join(e.Service.Tags, ",") != "python,v1" {
		t.Errorf("registered %s:%d tags %v, want 127.0.0.1:%s tags python,v1", e.Service.Address, e.Service.Port, e.Service.Tags, py.port)
	}
	checks, err := agent.Client.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	var checked bool
	for _, c := range checks {
		if c.ServiceName == "pyapp" && c.Status == api.HealthPassing {
			checked = true
		}
	}
	if !checked {
		t.Errorf("no passing check for pyapp: %v", checks)
	}

	// B finds the python service through Consul, as any Chassis client would.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, body := get(t, b.url+"/pyapp/hello?x=1")
		if resp.StatusCode == http.StatusOK {
			if want := py.port + " GET /hello?x=1\n"; string(body) != want {
				t.Fatalf("B answered %q, want %q", body, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B did not reach pyapp: %d %s", resp.StatusCode, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, body := get(t, b.url+"/nosuch/x")
	wantProblem(t, resp, body, http.StatusNotFound, "discovery knows no such service")

	// A drains: pyapp is deregistered at once, and B's watch sees it go.
	if err := a.stop(); err != nil {
		t.Fatalf("A's Run: %v", err)
	}
	if entries, _, err := agent.Client.Health().Service("pyapp", "", false, nil); err != nil || len(entries) != 0 {
		t.Fatalf("after A's drain, pyapp has %d instances (%v), want 0", len(entries), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		resp, body = get(t, b.url+"/pyapp/hello")
		if resp.StatusCode == http.StatusServiceUnavailable {
			wantProblem(t, resp, body, http.StatusServiceUnavailable, "pyapp: ")
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("B still answers %d %s after pyapp left Consul", resp.StatusCode, body)
}
