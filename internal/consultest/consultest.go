package consultest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// Timeouts for agents to become usable. A dev agent is ready in well under a second; a 3-server
// cluster elects a leader in about 6 s (slower on a loaded machine).
const (
	DevReadyTimeout     = 30 * time.Second
	ClusterReadyTimeout = 90 * time.Second
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of the consul binary, failing the test with instructions if there is none.
func Binary(t TB) string {
	t.Helper()
	binOnce.Do(func() {
		if p, err := exec.LookPath("consul"); err == nil {
			binPath = p
			return
		}
		gopath := os.Getenv("GOPATH")
		if gopath == "" {
			out, err := exec.Command("go", "env", "GOPATH").Output()
			if err == nil {
				gopath = strings.TrimSpace(string(out))
			}
		}
		if gopath != "" {
			p := filepath.Join(strings.Split(gopath, string(os.PathListSeparator))[0], "bin", "consul")
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				binPath = p
				return
			}
		}
		binErr = errors.New("consul binary not found in PATH or $(go env GOPATH)/bin: run scripts/install-consul.sh first")
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// Agent is one consul process.
type Agent struct {
	// Name is the node name.
	Name string
	// HTTPAddr is the agent's HTTP API address ("127.0.0.1:port").
	HTTPAddr string
	// ServerAddr is the server RPC address ("127.0.0.1:port"), as /v1/status/leader reports it.
	ServerAddr string
	// SerfLANAddr is the gossip address other agents join.
	SerfLANAddr string
	// DNSAddr is the agent's DNS interface ("127.0.0.1:port", UDP and TCP): "<service>.service.consul"
	// answers with the passing instances (SRV and A records), with TTL 0 (Consul's default service_ttl).
	DNSAddr string
	// Client talks to this agent's HTTP API.
	Client *api.Client

	t       TB
	bin     string
	args    []string
	logPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

type ports struct{ http, serfLAN, serfWAN, server, dns int }

// freePorts returns n ports free for both TCP and UDP on 127.0.0.1 (serf uses both).
func freePorts(t TB, n int) []int {
	t.Helper()
	var out []int
	var hold []interface{ Close() error }
	defer func() {
		for _, h := range hold {
			_ = h.Close()
		}
	}()
	for len(out) < n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("consultest: free port: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			_ = ln.Close()
			continue
		}
		hold = append(hold, ln, pc)
		out = append(out, port)
	}
	return out
}

func newPorts(t TB) ports {
	p := freePorts(t, 5)
	return ports{http: p[0], serfLAN: p[1], serfWAN: p[2], server: p[3], dns: p[4]}
}

func (p ports) args() []string {
	return []string{
		"-bind=127.0.0.1", "-client=127.0.0.1", "-advertise=127.0.0.1",
		"-http-port=" + strconv.Itoa(p.http), "-dns-port=" + strconv.Itoa(p.dns),
		"-serf-lan-port=" + strconv.Itoa(p.serfLAN), "-serf-wan-port=" + strconv.Itoa(p.serfWAN),
		"-server-port=" + strconv.Itoa(p.server),
		// Dev mode otherwise binds 8502/8503, so a second agent on the machine would fail.
		"-grpc-port=-1", "-grpc-tls-port=-1",
	}
}

func newAgent(t TB, name string, p ports, extra []string) *Agent {
	t.Helper()
	a := &Agent{
		Name:        name,
		HTTPAddr:    "127.0.0.1:" + strconv.Itoa(p.http),
		ServerAddr:  "127.0.0.1:" + strconv.Itoa(p.server),
		SerfLANAddr: "127.0.0.1:" + strconv.Itoa(p.serfLAN),
		DNSAddr:     "127.0.0.1:" + strconv.Itoa(p.dns),
		t:           t,
		bin:         Binary(t),
		logPath:     filepath.Join(t.TempDir(), name+".log"),
	}
	a.args = append(append([]string{"agent", "-node=" + name, "-log-level=info"}, p.args()...), extra...)
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = a.HTTPAddr
	cfg.Scheme = "http"
	cfg.Token = ""
	cfg.HttpClient = &http.Client{Timeout: 10 * time.Second, Transport: cfg.Transport}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("consultest: client: %v", err)
	}
	a.Client = c
	t.Cleanup(func() {
		a.Kill()
		if t.Failed() {
			t.Logf("consultest: last lines of %s's log:\n%s", a.Name, a.LogTail(40))
		}
	})
	return a
}

// start launches the process. The log file is appended to, so a restart keeps the history.
func (a *Agent) start() {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd != nil {
		return
	}
	f, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		a.t.Fatalf("consultest: log file: %v", err)
	}
	fmt.Fprintf(f, "==== consultest: starting %s %s\n", a.bin, strings.Join(a.args, " "))
	cmd := exec.Command(a.bin, a.args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so a test binary killed mid-way does not leave agents behind on ^C.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		a.t.Fatalf("consultest: start %s: %v", a.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		close(done)
	}()
	a.cmd, a.done = cmd, done
}

// Kill stops the agent with SIGKILL (no leave, no graceful shutdown) and waits for it to exit. It does
// nothing if the agent is not running.
func (a *Agent) Kill() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.cmd, a.done = nil, nil
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart kills the agent if it runs and starts it again with the same ports and data directory (a
// dev agent comes back empty). It does not wait for readiness; see WaitReady and Cluster.WaitLeader.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Kill()
	a.start()
}

// Running reports whether the process is alive.
func (a *Agent) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done == nil {
		return false
	}
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// Pid returns the agent's process id, 0 if it is not running.
func (a *Agent) Pid() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil || a.cmd.Process == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// Leader returns the leader's server address as this agent sees it, or "" if it knows none.
func (a *Agent) Leader() (string, error) {
	return a.Client.Status().Leader()
}

// WaitReady waits until the agent answers and knows a leader, failing the test after timeout.
func (a *Agent) WaitReady(timeout time.Duration) {
	a.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if !a.Running() {
			a.t.Fatalf("consultest: %s exited; log tail:\n%s", a.Name, a.LogTail(30))
		}
		l, err := a.Leader()
		if err == nil && l != "" {
			return
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	a.t.Fatalf("consultest: %s has no leader after %v (last error: %v); log tail:\n%s", a.Name, timeout, last, a.LogTail(30))
}

// LogTail returns the last n lines of the agent's log.
func (a *Agent) LogTail(n int) string {
	b, err := os.ReadFile(a.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// StartDev starts `consul agent -dev` on free loopback ports and waits until it has elected itself.
// It is killed in t.Cleanup.
func StartDev(t TB) *Agent {
	t.Helper()
	a := newAgent(t, "dev-"+strconv.Itoa(os.Getpid())+"-"+strconv.FormatInt(time.Now().UnixNano()%1e6, 10), newPorts(t), []string{"-dev"})
	a.start()
	a.WaitReady(DevReadyTimeout)
	return a
}

// Cluster is a set of Consul servers on loopback.
type Cluster struct {
	Servers []*Agent
	t       TB
}

// StartCluster starts n servers (-server -bootstrap-expect n) that join each other, each with its own
// ports and data directory, and waits until they agree on a leader. raft_multiplier is 1 (Consul's
// production recommendation), so elections take a few seconds instead of the default's ~13.
func StartCluster(t TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatal("consultest: StartCluster needs at least one server")
	}
	ps := make([]ports, n)
	for i := range ps {
		ps[i] = newPorts(t)
	}
	c := &Cluster{t: t}
	for i, p := range ps {
		extra := []string{
			"-server", "-bootstrap-expect=" + strconv.Itoa(n), "-data-dir=" + t.TempDir(),
			"-retry-interval=1s", "-hcl=performance { raft_multiplier = 1 }",
			"-hcl=leave_on_terminate = false",
		}
		for j, q := range ps {
			if j != i {
				extra = append(extra, "-retry-join=127.0.0.1:"+strconv.Itoa(q.serfLAN))
			}
		}
		a := newAgent(t, "server-"+strconv.Itoa(i+1), p, extra)
		c.Servers = append(c.Servers, a)
	}
	for _, a := range c.Servers {
		a.start()
	}
	c.WaitLeader(ClusterReadyTimeout)
	return c
}

// WaitLeader waits until every running server reports the same leader, and returns it.
func (c *Cluster) WaitLeader(timeout time.Duration) *Agent {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := c.agreedLeader(); l != nil {
			return l
		}
		time.Sleep(100 * time.Millisecond)
	}
	var tails []string
	for _, a := range c.Servers {
		tails = append(tails, a.Name+":\n"+a.LogTail(15))
	}
	c.t.Fatalf("consultest: no agreed leader after %v; logs:\n%s", timeout, strings.Join(tails, "\n"))
	return nil
}

func (c *Cluster) agreedLeader() *Agent {
	leader := ""
	for _, a := range c.Servers {
		if !a.Running() {
			continue
		}
		l, err := a.Leader()
		if err != nil || l == "" || (leader != "" && l != leader) {
			return nil
		}
		leader = l
	}
	for _, a := range c.Servers {
		if a.ServerAddr == leader && a.Running() {
			return a
		}
	}
	return nil
}

// Leader returns the current leader, waiting for one for up to ClusterReadyTimeout.
func (c *Cluster) Leader() *Agent { c.t.Helper(); return c.WaitLeader(ClusterReadyTimeout) }

// Follower returns a running server that is not the leader.
func (c *Cluster) Follower() *Agent {
	c.t.Helper()
	l := c.Leader()
	for _, a := range c.Servers {
		if a != l && a.Running() {
			return a
		}
	}
	c.t.Fatal("consultest: no running follower")
	return nil
}
