// Command cap shows the CAP theorem on a real Consul cluster: three servers on loopback, one of them
// cut off from the other two by a network partition, and the choice Consul makes for each kind of
// read. From the repository root, as root (the partition is iptables rules on the loopback aliases
// 127.0.0.11-13; scripts/install-netem.sh installs iptables, scripts/install-consul.sh consul):
//
//	go run ./examples/cap
//
// It writes a key, partitions a follower, writes a new value through the majority and then reads the
// key from the partitioned server three ways: a stale read (?stale) is answered from its own,
// now outdated, copy (available, not consistent); a default read and a consistent read
// (?consistent) need the leader, which it cannot reach, and are refused (consistent, not
// available). The majority side keeps accepting writes and consistent reads. Meanwhile the gossip
// layer (Serf's SWIM) marks the cut server failed. After the partition heals, the server catches up
// from the leader's Raft log and gossip sees it alive again. docs/concepts.md explains what Chassis does with each choice.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/internal/consultest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cap:", err)
		stop()
		os.Exit(1)
	}
}

// key is the key the demonstration writes and reads.
const key = "chassis/cap-demo"

// Outcome is what the demonstration observed; the test asserts it.
type Outcome struct {
	Partitioned     string        // the partitioned server's name
	StaleValue      string        // a stale read from the partitioned server
	StaleKnowLeader bool          // the stale answer's X-Consul-KnownLeader
	StaleLag        time.Duration // the stale answer's X-Consul-LastContact
	DefaultErr      error         // a default read from the partitioned server
	ConsistentErr   error         // a consistent read from the partitioned server
	MajorityValue   string        // a consistent read through the majority's leader
	HealedValue     string        // a stale read from the once partitioned server after the heal
	GossipFailed    time.Duration // from the cut until the leader's gossip marked the server failed
	GossipAlive     time.Duration // from the heal until it was alive again
}

// run is the whole demonstration; it stops the cluster and removes the partition before it returns.
func run(ctx context.Context, out io.Writer) (o Outcome, err error) {
	err = consultest.Run(func(t consultest.TB) { o = demonstrate(ctx, t, out) })
	return o, err
}

func demonstrate(ctx context.Context, r consultest.TB, out io.Writer) (o Outcome) {
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	say("1. Three Consul servers on loopback (127.0.0.11-13 for gossip and Raft, HTTP on 127.0.0.1), raft_multiplier 1.")
	t0 := time.Now()
	c := consultest.StartPartitionableCluster(r, 3)
	leader := c.Leader()
	follower := c.Follower()
	say("   leader %s elected in %.1fs; %s is a follower.", leader.Name, time.Since(t0).Seconds(), follower.Name)
	o.Partitioned = follower.Name

	put(r, ctx, leader, "v1")
	waitValue(r, ctx, follower, "v1", 10*time.Second)
	say("2. PUT %s = v1 through the leader; every server has it (a stale read from %s says v1).", key, follower.Name)

	say("3. Partition: every packet between %s and the two other servers is dropped (iptables).", follower.Name)
	healPair := c.Partition(follower)
	healInbound := c.Isolate(follower)
	heal := func() { healInbound(); healPair() }
	cut := time.Now()
	// Gossip's verdict takes tens of seconds (SWIM's suspicion timeout, longer while the cut server's
	// own TCP push-pull still refutes it): wait for it while the reads below run.
	type verdict struct {
		after time.Duration
		err   error
	}
	gossip := make(chan verdict, 1)
	go func() {
		err := waitMember(ctx, leader, follower.Name, memberFailed, 2*time.Minute)
		gossip <- verdict{time.Since(cut), err}
	}()
	// A follower notices after its heartbeat timeout (1 s with raft_multiplier 1) and then keeps
	// calling elections it cannot win; until then it still believes in the old leader.
	waitNoLeader(r, ctx, follower, 20*time.Second)
	say("   %s lost the leader: it knows no leader now (it calls elections it cannot win, 1 vote of 3).", follower.Name)

	put(r, ctx, leader, "v2")
	say("4. PUT %s = v2 through the leader %s: the majority (2 of 3) commits it, the partition notwithstanding.", key, leader.Name)

	say("5. Reads from the partitioned server %s:", follower.Name)
	v, meta, err := get(ctx, follower, &api.QueryOptions{AllowStale: true})
	if err != nil {
		r.Fatalf("stale read from %s: %v", follower.Name, err)
	}
	o.StaleValue, o.StaleKnowLeader, o.StaleLag = v, meta.KnownLeader, meta.LastContact
	say("   ?stale      → %q at once (known leader: %t, last contact with a leader %s ago): AVAILABLE, NOT CONSISTENT", v, meta.KnownLeader, meta.LastContact.Round(time.Millisecond))
	t1 := time.Now()
	_, _, o.DefaultErr = get(ctx, follower, nil)
	say("   default     → refused after %.1fs: %s", time.Since(t1).Seconds(), errText(o.DefaultErr))
	t1 = time.Now()
	_, _, o.ConsistentErr = get(ctx, follower, &api.QueryOptions{RequireConsistent: true})
	say("   ?consistent → refused after %.1fs: %s: CONSISTENT, NOT AVAILABLE", time.Since(t1).Seconds(), errText(o.ConsistentErr))

	v, _, err = get(ctx, leader, &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		r.Fatalf("consistent read from the leader: %v", err)
	}
	o.MajorityValue = v
	say("6. Meanwhile the majority side answers a consistent read from %s: %q.", leader.Name, v)

	g := <-gossip
	if g.err != nil {
		r.Fatal(g.err)
	}
	o.GossipFailed = g.after
	say("7. Gossip (Serf, SWIM): %s's view marked %s failed %.1fs after the cut: its probes, direct and through",
		leader.Name, follower.Name, o.GossipFailed.Seconds())
	say("   the other member, went unanswered, and no refutation arrived before the suspicion timeout.")

	heal()
	healed := time.Now()
	say("8. Heal the partition.")
	c.WaitLeader(consultest.ClusterReadyTimeout)
	o.HealedValue = waitValue(r, ctx, follower, "v2", 30*time.Second)
	say("   %s caught up from the leader's log: a stale read now says %q.", follower.Name, o.HealedValue)
	if err := waitMember(ctx, leader, follower.Name, memberAlive, time.Minute); err != nil {
		r.Fatal(err)
	}
	o.GossipAlive = time.Since(healed)
	say("   gossip: %s is alive again in %s's view %.1fs after the heal.", follower.Name, leader.Name, o.GossipAlive.Seconds())
	say("")
	say("Consul chose consistency for its default and consistent reads (CP) and lets a client opt into")
	say("availability with stale reads (AP). Chassis watches with stale reads (CONSUL_CONSISTENCY=stale,")
	say("the default), so a partitioned server still answers with its last instance list; locks and")
	say("elections use sessions the leader confirms, so a minority cannot hold them (docs/concepts.md).")
	return o
}

func errText(err error) string {
	if err == nil {
		return "answered (unexpected)"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.Contains(s, "Unexpected response code") {
		s = strings.TrimSpace(s[i+2:])
	}
	return s
}

// readTimeout bounds a read that needs the leader: Consul holds such a request for up to its
// rpc_hold_timeout (7 s) waiting for one, then answers "No cluster leader".
const readTimeout = 12 * time.Second

func get(ctx context.Context, a *consultest.Agent, q *api.QueryOptions) (string, *api.QueryMeta, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	if q == nil {
		q = &api.QueryOptions{}
	}
	kv, meta, err := a.Client.KV().Get(key, q.WithContext(ctx))
	if err != nil {
		return "", meta, err
	}
	if kv == nil {
		return "", meta, nil
	}
	return string(kv.Value), meta, nil
}

func put(r consultest.TB, ctx context.Context, a *consultest.Agent, v string) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	if _, err := a.Client.KV().Put(&api.KVPair{Key: key, Value: []byte(v)}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		r.Fatalf("PUT %s=%s through %s: %v", key, v, a.Name, err)
	}
}

// waitValue waits until a stale read from a says want, and returns it.
func waitValue(r consultest.TB, ctx context.Context, a *consultest.Agent, want string, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		v, _, err := get(ctx, a, &api.QueryOptions{AllowStale: true})
		if err == nil && v == want {
			return v
		}
		last = v
		time.Sleep(100 * time.Millisecond)
	}
	r.Fatalf("%s still says %q, not %q, after %s", a.Name, last, want, timeout)
	return ""
}

func waitNoLeader(r consultest.TB, ctx context.Context, a *consultest.Agent, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if l, err := a.Leader(); err == nil && l == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.Fatalf("%s still reports a leader %s after the partition", a.Name, timeout)
}

// Serf member states as /v1/agent/members reports them.
const (
	memberAlive  = 1
	memberFailed = 4
)

// waitMember waits until a's gossip view (the LAN pool) shows the member name in state status.
func waitMember(ctx context.Context, a *consultest.Agent, name string, status int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := -1
	for time.Now().Before(deadline) && ctx.Err() == nil {
		ms, err := a.Client.Agent().Members(false)
		if err == nil {
			for _, m := range ms {
				if m.Name == name {
					last = m.Status
				}
			}
			if last == status {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s's gossip view of %s: status %d, want %d after %s", a.Name, name, last, status, timeout)
}
