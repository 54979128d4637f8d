package etcdtest

import (
	"bytes"
	"encoding/json"
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

	"github.com/cloudchassis/kit/internal/consultest"
)

// TB is the part of testing.TB the helpers use (shared with consultest).
type TB = consultest.TB

// Timeouts for members to become usable. A single member is ready in well under a second; a
// 3-member cluster elects a leader within a few election timeouts (1 s each).
const (
	ReadyTimeout        = 30 * time.Second
	ClusterReadyTimeout = 60 * time.Second
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of the etcd binary, failing the test with instructions if there is none.
func Binary(t TB) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = find("etcd") })
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// find looks for a binary of scripts/install-etcd.sh in PATH, then in $(go env GOPATH)/bin.
func find(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	if gopath != "" {
		p := filepath.Join(strings.Split(gopath, string(os.PathListSeparator))[0], "bin", name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s binary not found in PATH or $(go env GOPATH)/bin: run scripts/install-etcd.sh first", name)
}

// Member is one etcd process.
type Member struct {
	// Name is the member's name in the cluster.
	Name string
	// ClientURL is where clients connect ("http://127.0.0.1:port").
	ClientURL string
	// PeerURL is where the other members connect.
	PeerURL string

	t       TB
	bin     string
	args    []string
	dir     string // data and log
	logPath string
	uid     int // >0: the process runs as this user (partitionable clusters)
	http    *http.Client

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	id   string // the member id, learnt from its status
}

// Endpoint returns the client address without the scheme ("127.0.0.1:port"), as clientv3 and
// ETCD_ENDPOINTS take it.
func (m *Member) Endpoint() string { return strings.TrimPrefix(m.ClientURL, "http://") }

// freePort returns a TCP port free on host.
func freePort(t TB, host string) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("etcdtest: free port on %s: %v", host, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func newMember(t TB, name, peerHost string, uid int) *Member {
	t.Helper()
	dir, err := os.MkdirTemp("", "etcdtest-"+name+"-")
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	m := &Member{
		Name:      name,
		ClientURL: "http://127.0.0.1:" + strconv.Itoa(freePort(t, "127.0.0.1")),
		PeerURL:   "http://" + net.JoinHostPort(peerHost, strconv.Itoa(freePort(t, peerHost))),
		t:         t,
		bin:       Binary(t),
		dir:       dir,
		logPath:   filepath.Join(dir, "etcd.log"),
		uid:       uid,
		http:      &http.Client{Timeout: 5 * time.Second},
	}
	if uid > 0 {
		// The member's user must reach its binary and write its data directory.
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		data := filepath.Join(dir, "data")
		if err := os.Mkdir(data, 0o700); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		if err := os.Chown(data, uid, uid); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		bin := filepath.Join(dir, "etcd")
		if err := copyFile(m.bin, bin); err != nil {
			t.Fatalf("etcdtest: %v", err)
		}
		m.bin = bin
	}
	t.Cleanup(func() {
		m.Kill()
		if t.Failed() {
			t.Logf("etcdtest: last lines of %s's log:\n%s", m.Name, m.LogTail(30))
		}
	})
	return m
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// configure sets the member's flags for a cluster of members.
func (m *Member) configure(all []*Member, extra []string) {
	var initial []string
	for _, o := range all {
		initial = append(initial, o.Name+"="+o.PeerURL)
	}
	m.args = append([]string{
		"--name=" + m.Name, "--data-dir=" + filepath.Join(m.dir, "data"),
		"--listen-client-urls=" + m.ClientURL, "--advertise-client-urls=" + m.ClientURL,
		"--listen-peer-urls=" + m.PeerURL, "--initial-advertise-peer-urls=" + m.PeerURL,
		"--initial-cluster=" + strings.Join(initial, ","), "--initial-cluster-state=new",
		"--initial-cluster-token=etcdtest-" + strconv.Itoa(os.Getpid()),
		// Tests do not need durability across power loss; fsync makes them slow on a busy disk.
		"--unsafe-no-fsync",
		"--heartbeat-interval=100", "--election-timeout=1000",
		"--log-level=info",
	}, extra...)
}

// start launches the process. The log file is appended to, so a restart keeps the history.
func (m *Member) start() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return
	}
	f, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		m.t.Fatalf("etcdtest: log file: %v", err)
	}
	fmt.Fprintf(f, "==== etcdtest: starting %s %s\n", m.bin, strings.Join(m.args, " "))
	cmd := exec.Command(m.bin, m.args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so a test binary killed mid-way does not leave members behind on ^C.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if m.uid > 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(m.uid), Gid: uint32(m.uid)}
	}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		m.t.Fatalf("etcdtest: start %s: %v", m.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		close(done)
	}()
	m.cmd, m.done = cmd, done
}

// Kill stops the member with SIGKILL and waits for it to exit. It does nothing if it is not running.
func (m *Member) Kill() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd, m.done = nil, nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart kills the member if it runs and starts it again with the same ports and data directory.
// It does not wait for readiness; see WaitReady and Cluster.WaitLeader.
func (m *Member) Restart() {
	m.t.Helper()
	m.Kill()
	m.start()
}

// Running reports whether the process is alive.
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done == nil {
		return false
	}
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// Pid returns the member's process id, 0 if it is not running.
func (m *Member) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || m.cmd.Process == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Status is the part of etcd's maintenance status the harness reads.
type Status struct {
	MemberID string // this member
	Leader   string // the leader's member id, "" or "0" when there is none
	Revision int64
	RaftTerm uint64
}

// Status asks the member for its status through the HTTP gateway.
func (m *Member) Status() (Status, error) {
	resp, err := m.http.Post(m.ClientURL+"/v3/maintenance/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		return Status{}, err
	}
	defer resp.Body.Close()
	var body struct {
		Header struct {
			MemberID string `json:"member_id"`
			Revision string `json:"revision"`
			RaftTerm string `json:"raft_term"`
		} `json:"header"`
		Leader string `json:"leader"`
	}
	if resp.StatusCode != http.StatusOK {
		return Status{}, fmt.Errorf("etcdtest: %s status: %s", m.Name, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return Status{}, fmt.Errorf("etcdtest: %s status: %w", m.Name, err)
	}
	rev, _ := strconv.ParseInt(body.Header.Revision, 10, 64)
	term, _ := strconv.ParseUint(body.Header.RaftTerm, 10, 64)
	st := Status{MemberID: body.Header.MemberID, Leader: body.Leader, Revision: rev, RaftTerm: term}
	m.mu.Lock()
	m.id = st.MemberID
	m.mu.Unlock()
	return st, nil
}

// Healthy reports whether the member answers /health with "true" (it has a leader and can serve a
// linearizable read).
func (m *Member) Healthy() error {
	resp, err := m.http.Get(m.ClientURL + "/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct{ Health string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return err
	}
	if body.Health != "true" {
		return errors.New("etcdtest: " + m.Name + " is not healthy")
	}
	return nil
}

// WaitReady waits until the member is healthy, failing the test after timeout.
func (m *Member) WaitReady(timeout time.Duration) {
	m.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if !m.Running() {
			m.t.Fatalf("etcdtest: %s exited; log tail:\n%s", m.Name, m.LogTail(30))
		}
		if last = m.Healthy(); last == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	m.t.Fatalf("etcdtest: %s not healthy after %v (last error: %v); log tail:\n%s", m.Name, timeout, last, m.LogTail(30))
}

// LogTail returns the last n lines of the member's log.
func (m *Member) LogTail(n int) string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// Start starts a single-member etcd on free loopback ports and waits until it is healthy. It is
// killed in t.Cleanup.
func Start(t TB) *Member {
	t.Helper()
	m := newMember(t, "single", "127.0.0.1", 0)
	m.configure([]*Member{m}, nil)
	m.start()
	m.WaitReady(ReadyTimeout)
	return m
}

// Cluster is a set of etcd members on loopback.
type Cluster struct {
	Members []*Member
	t       TB
	ips     []string // partitionable clusters: each member's peer address
}

// StartCluster starts n members that form one cluster and waits until they agree on a leader.
func StartCluster(t TB, n int) *Cluster {
	t.Helper()
	return startCluster(t, n, false)
}

func startCluster(t TB, n int, partitionable bool) *Cluster {
	t.Helper()
	if n < 1 || n > 9 {
		t.Fatal("etcdtest: a cluster has 1 to 9 members")
	}
	c := &Cluster{t: t}
	for i := range n {
		host, uid := "127.0.0.1", 0
		if partitionable {
			host, uid = "127.0.0."+strconv.Itoa(PartitionBaseIP+i), PartitionBaseUID+i
			c.ips = append(c.ips, host)
		}
		c.Members = append(c.Members, newMember(t, "member-"+strconv.Itoa(i+1), host, uid))
	}
	for _, m := range c.Members {
		m.configure(c.Members, nil)
	}
	for _, m := range c.Members {
		m.start()
	}
	c.WaitLeader(ClusterReadyTimeout)
	return c
}

// Endpoints returns every member's client address, for ETCD_ENDPOINTS.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.Endpoint())
	}
	return out
}

// WaitLeader waits until every running member reports the same leader, and returns it.
func (c *Cluster) WaitLeader(timeout time.Duration) *Member {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := c.agreedLeader(); l != nil {
			return l
		}
		time.Sleep(100 * time.Millisecond)
	}
	var tails []string
	for _, m := range c.Members {
		tails = append(tails, m.Name+":\n"+m.LogTail(15))
	}
	c.t.Fatalf("etcdtest: no agreed leader after %v; logs:\n%s", timeout, strings.Join(tails, "\n"))
	return nil
}

// WaitLeaderAmong waits until the given members agree on a leader among themselves (the majority
// side of a partition), and returns it.
func (c *Cluster) WaitLeaderAmong(timeout time.Duration, members ...*Member) *Member {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := agreed(members); l != nil {
			return l
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("etcdtest: no agreed leader among %d members after %v", len(members), timeout)
	return nil
}

func (c *Cluster) agreedLeader() *Member { return agreed(c.Members) }

func agreed(members []*Member) *Member {
	leader := ""
	ids := map[string]*Member{}
	for _, m := range members {
		if !m.Running() {
			continue
		}
		st, err := m.Status()
		if err != nil || st.Leader == "" || st.Leader == "0" || (leader != "" && st.Leader != leader) {
			return nil
		}
		leader = st.Leader
		ids[st.MemberID] = m
	}
	return ids[leader]
}

// Leader returns the current leader, waiting for one for up to ClusterReadyTimeout.
func (c *Cluster) Leader() *Member { c.t.Helper(); return c.WaitLeader(ClusterReadyTimeout) }

// Follower returns a running member that is not the leader.
func (c *Cluster) Follower() *Member {
	c.t.Helper()
	l := c.Leader()
	for _, m := range c.Members {
		if m != l && m.Running() {
			return m
		}
	}
	c.t.Fatal("etcdtest: no running follower")
	return nil
}
