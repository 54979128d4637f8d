package consultest

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
)

// PartitionBaseIP is the first loopback address StartPartitionableCluster binds servers to: server i
// (from 0) gets 127.0.0.<PartitionBaseIP+i>, so that iptables rules can tell the servers apart
// while their HTTP APIs stay on 127.0.0.1.
const PartitionBaseIP = 11

// iptablesMu serializes rule changes within this process (iptables takes its own lock too).
var iptablesMu sync.Mutex

// StartPartitionableCluster starts n servers like StartCluster, but each binds its gossip and RPC
// to its own loopback address (127.0.0.11, .12, ...), so that Partition can cut traffic between
// them with iptables. The HTTP APIs stay on 127.0.0.1. It fails the test when iptables is missing:
// scripts/install-netem.sh installs it (root).
func StartPartitionableCluster(t TB, n int) *Cluster {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatal("consultest: iptables not found: run scripts/install-netem.sh first (as root)")
	}
	if n < 1 || n > 200 {
		t.Fatal("consultest: StartPartitionableCluster needs 1 to 200 servers")
	}
	ps := make([]ports, n)
	ips := make([]string, n)
	for i := range ps {
		ps[i] = newPorts(t)
		ips[i] = "127.0.0." + strconv.Itoa(PartitionBaseIP+i)
	}
	c := &Cluster{t: t}
	for i, p := range ps {
		extra := []string{
			// Later flags win: gossip and RPC move to the server's own address.
			"-bind=" + ips[i], "-advertise=" + ips[i],
			"-server", "-bootstrap-expect=" + strconv.Itoa(n), "-data-dir=" + t.TempDir(),
			"-retry-interval=1s", "-hcl=performance { raft_multiplier = 1 }",
			"-hcl=leave_on_terminate = false",
		}
		for j, q := range ps {
			if j != i {
				extra = append(extra, "-retry-join="+ips[j]+":"+strconv.Itoa(q.serfLAN))
			}
		}
		a := newAgent(t, "server-"+strconv.Itoa(i+1), p, extra)
		a.ServerAddr = ips[i] + ":" + strconv.Itoa(p.server)
		a.SerfLANAddr = ips[i] + ":" + strconv.Itoa(p.serfLAN)
		c.Servers = append(c.Servers, a)
	}
	for _, a := range c.Servers {
		a.start()
	}
	c.WaitLeader(ClusterReadyTimeout)
	return c
}

// BindIP returns the address the agent's gossip and RPC are bound to.
func (a *Agent) BindIP() string {
	host, _, _ := strings.Cut(a.ServerAddr, ":")
	return host
}

// Partition drops every packet between the agents of side and the cluster's other servers, in
// both directions, until the returned heal function runs (it also runs in t.Cleanup). The cluster
// must come from StartPartitionableCluster. Traffic to the HTTP APIs is not affected.
func (c *Cluster) Partition(side ...*Agent) (heal func()) {
	c.t.Helper()
	in := map[*Agent]bool{}
	for _, a := range side {
		in[a] = true
	}
	var rules [][]string
	for _, a := range side {
		for _, b := range c.Servers {
			if in[b] {
				continue
			}
			for _, dir := range [][2]string{{a.BindIP(), b.BindIP()}, {b.BindIP(), a.BindIP()}} {
				rules = append(rules, []string{"INPUT", "-s", dir[0], "-d", dir[1], "-j", "DROP",
					"-m", "comment", "--comment", "consultest-partition"})
			}
		}
	}
	return AddRules(c.t, rules)
}

// Isolate drops every packet sent to a's gossip and RPC address from any other address, until the
// returned heal function runs (it also runs in t.Cleanup). Partition matches packets by the
// servers' addresses, which leaves out connections dialled without binding a source address
// (memberlist's TCP fallback probe and push-pull come from 127.0.0.1), so that the other servers'
// gossip still reaches a over TCP and keeps it alive; with Isolate as well, their probes fail and
// they mark a failed. The cluster must come from StartPartitionableCluster.
func (c *Cluster) Isolate(a *Agent) (heal func()) {
	c.t.Helper()
	return AddRules(c.t, [][]string{{"INPUT", "-d", a.BindIP(), "!", "-s", a.BindIP(), "-j", "DROP",
		"-m", "comment", "--comment", "consultest-partition"}})
}

// AddRules inserts iptables rules (each the arguments after -I, chain first) and returns the
// function that deletes them, also registered in t.Cleanup. etcdtest's partitions use it too.
func AddRules(t TB, rules [][]string) (heal func()) {
	t.Helper()
	var added [][]string
	var once sync.Once
	heal = func() {
		once.Do(func() {
			for _, r := range added {
				if err := iptables(append([]string{"-D"}, r...)...); err != nil {
					t.Errorf("consultest: removing partition rule %v: %v", r, err)
				}
			}
		})
	}
	t.Cleanup(heal)
	for _, r := range rules {
		if err := iptables(append([]string{"-I"}, r...)...); err != nil {
			heal()
			t.Fatalf("consultest: adding partition rule %v: %v", r, err)
		}
		added = append(added, r)
	}
	return heal
}

func iptables(args ...string) error {
	iptablesMu.Lock()
	defer iptablesMu.Unlock()
	out, err := exec.Command("iptables", append([]string{"-w", "5"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
