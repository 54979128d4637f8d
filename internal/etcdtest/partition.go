package etcdtest

import (
	"os/exec"
	"strconv"

	"github.com/cloudchassis/kit/internal/consultest"
)

// A partitionable cluster's member i (from 0) listens for its peers on 127.0.0.<PartitionBaseIP+i>
// and runs as user PartitionBaseUID+i, so that iptables can tell its traffic apart: packets to its
// peer address from anyone else (INPUT), and packets its process sends to the other members' peer
// addresses (OUTPUT, matched by owner: etcd does not bind a source address when it dials a peer, so
// every member's connections come from 127.0.0.1 and only the owner tells them apart). Clients keep
// reaching every member on 127.0.0.1. The addresses do not overlap consultest's (127.0.0.11-...).
const (
	PartitionBaseIP  = 31
	PartitionBaseUID = 47001
)

// StartPartitionableCluster starts n members like StartCluster, each with its own peer address and
// user, so that Isolate can cut it off from the others. It fails the test when iptables is missing
// (scripts/install-netem.sh installs it) or the test does not run as root (a member's user is set
// when it starts, and iptables needs CAP_NET_ADMIN).
func StartPartitionableCluster(t TB, n int) *Cluster {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatal("etcdtest: iptables not found: run scripts/install-netem.sh first (as root)")
	}
	return startCluster(t, n, true)
}

// Isolate cuts m off from the other members in both directions (connections they dialled to m, and
// connections m dials to them) until the returned heal function
// runs (it also runs in t.Cleanup): a minority partition of one, while m's own clients still reach
// it. The cluster must come from StartPartitionableCluster.
func (c *Cluster) Isolate(m *Member) (heal func()) {
	c.t.Helper()
	if len(c.ips) == 0 {
		c.t.Fatal("etcdtest: Isolate needs a cluster from StartPartitionableCluster")
	}
	var mine string
	var others []string
	for i, o := range c.Members {
		if o == m {
			mine = c.ips[i]
		} else {
			others = append(others, c.ips[i])
		}
	}
	rules := [][]string{
		// Connections to m's peer address: packets from anyone else, and m's replies on them (from its
		// peer address to the dialers' 127.0.0.1), which would otherwise carry m's messages one way.
		{"INPUT", "-d", mine, "!", "-s", mine, "-j", "DROP", "-m", "comment", "--comment", "etcdtest-partition"},
		{"INPUT", "-s", mine, "!", "-d", mine, "-j", "DROP", "-m", "comment", "--comment", "etcdtest-partition"},
	}
	for _, ip := range others {
		rules = append(rules, []string{"OUTPUT", "-d", ip, "-m", "owner", "--uid-owner", strconv.Itoa(m.uid),
			"-j", "DROP", "-m", "comment", "--comment", "etcdtest-partition"})
	}
	return consultest.AddRules(c.t, rules)
}
