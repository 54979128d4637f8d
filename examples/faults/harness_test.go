package faults_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/consul"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/internal/consultest"
	"github.com/cloudchassis/kit/resilience"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serverBinary builds ./server once per test binary run.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func serverBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "faults-server-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "server")
		out, err := exec.Command("go", "build", "-o", binPath, "./server").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./server: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// process is one running server instance.
type process struct {
	cmd  *exec.Cmd
	addr string
}

func startServer(t *testing.T, name string) *process {
	t.Helper()
	cmd := exec.Command(serverBinary(t), "-name", name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "LISTEN ") {
		t.Fatalf("server %s did not start: %q %v", name, line, err)
	}
	return &process{cmd: cmd, addr: strings.TrimSpace(strings.TrimPrefix(line, "LISTEN "))}
}

func instanceOf(t *testing.T, id, hostport string) discovery.Instance {
	t.Helper()
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(p)
	return discovery.Instance{ID: id, Address: host, Port: port}
}

// attemptLog records every attempt that reaches the network, per instance address.
type attemptLog struct {
	mu sync.Mutex
	at map[string][]time.Time
	rt http.RoundTripper
}

func newAttemptLog(base http.RoundTripper) *attemptLog {
	return &attemptLog{at: map[string][]time.Time{}, rt: base}
}

func (l *attemptLog) RoundTrip(r *http.Request) (*http.Response, error) {
	l.mu.Lock()
	l.at[r.URL.Host] = append(l.at[r.URL.Host], time.Now())
	l.mu.Unlock()
	return l.rt.RoundTrip(r)
}

func (l *attemptLog) times(host string) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.at[host])
}

func (l *attemptLog) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, v := range l.at {
		n += len(v)
	}
	return n
}

// client builds the production chain: resilience outer layers -> lb (a watcher on a real Consul
// agent) -> per-instance resilience layers -> attempt log -> a real http.Transport.
type client struct {
	http  *http.Client
	dep   *resilience.Dependency
	log   *attemptLog
	bal   *lb.Balancer
	trans *http.Transport
}

func newClient(t *testing.T, service string, cfg resilience.Config, instances []discovery.Instance, lbOpts ...lb.Option) *client {
	t.Helper()
	dep, err := resilience.NewDependency(service, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DialContext: (&net.Dialer{Timeout: time.Second}).DialContext}
	log := newAttemptLog(tr)
	opts := append([]lb.Option{
		lb.WithBaseTransport(log),
		lb.WithInstancePolicy(dep),
	}, lbOpts...)
	bal, err := lb.New(service, consulWatcher(t, service, instances), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := bal.Start(); err != nil {
		t.Fatal(err)
	}
	c := &client{http: &http.Client{Transport: dep.Wrap(lb.NewTransport(bal))}, dep: dep, log: log, bal: bal, trans: tr}
	t.Cleanup(func() {
		_ = bal.Close()
		tr.CloseIdleConnections()
	})
	return c
}

// consulWatcher registers the instances in a real Consul dev agent of the test's own and returns a
// watcher on the service, as chassis builds it (stale reads, shared blocking query). The instances are
// registered without a health check, so that each scenario shows what the client alone does about a
// dead, failing or stalling instance: in production the agent's check on /readyz would also take a
// dead instance out, some seconds later.
func consulWatcher(t *testing.T, service string, instances []discovery.Instance) discovery.Watcher {
	t.Helper()
	agent := consultest.StartDev(t)
	for _, in := range instances {
		err := agent.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: in.ID, Name: service, Address: in.Address, Port: in.Port,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	reg, err := consul.NewRegistry(consul.NewClient(agent.Client))
	if err != nil {
		t.Fatal(err)
	}
	w, err := reg.Watch(service)
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: the balancer (registered after this) closes before the watch.
	t.Cleanup(func() {
		_ = w.Close()
		_ = reg.Close()
	})
	return w
}

type result struct {
	start  time.Time
	lat    time.Duration
	status int
	err    error
}

func (r result) ok() bool { return r.err == nil && r.status == http.StatusOK }

// load sends GET http://<service>/ at qps for d, open loop (a new call every tick whatever the
// previous ones are doing), and returns every result once all calls finished.
func load(t *testing.T, c *client, service string, qps int, d time.Duration) []result {
	t.Helper()
	n := int(d.Seconds() * float64(qps))
	results := make([]result, n)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(qps))
	defer tick.Stop()
	for i := range n {
		<-tick.C
		wg.Go(func() {
			start := time.Now()
			resp, err := c.http.Get("http://" + service + "/")
			r := result{start: start, err: err}
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				r.status = resp.StatusCode
			}
			r.lat = time.Since(start)
			results[i] = r
		})
	}
	wg.Wait()
	return results
}

func successRate(rs []result) (ok int, rate float64) {
	for _, r := range rs {
		if r.ok() {
			ok++
		}
	}
	return ok, float64(ok) / float64(len(rs))
}

func percentile(rs []result, q float64, filter func(result) bool) time.Duration {
	var l []time.Duration
	for _, r := range rs {
		if filter == nil || filter(r) {
			l = append(l, r.lat)
		}
	}
	if len(l) == 0 {
		return 0
	}
	slices.Sort(l)
	i := min(int(q*float64(len(l))), len(l)-1)
	return l[i]
}

func firstErrors(rs []result, n int) []string {
	var out []string
	for _, r := range rs {
		if !r.ok() && len(out) < n {
			out = append(out, fmt.Sprintf("status=%d err=%v", r.status, r.err))
		}
	}
	return out
}

func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("fault scenario: real processes and seconds of load; skipped with -short")
	}
}

var _ = context.Background
