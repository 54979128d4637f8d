package etcd_test

import (
	"testing"
	"time"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/etcd"
	"github.com/cloudchassis/kit/internal/etcdtest"
)

// Leader loss in a 3-member cluster: watches continue (a change made after the kill arrives) and
// registrations survive (their leases are kept alive through the new leader).
func TestClusterLeaderLoss(t *testing.T) {
	integration(t)
	cl := etcdtest.StartCluster(t, 3)
	c := newClient(t, cl.Endpoints()...)
	r := newRegistry(t, c)
	w := watch(t, r, "orders")
	const ttl = 3 * time.Second
	reg := register(t, c, etcd.Registration{Name: "orders", Port: 8080, TTL: ttl})
	waitFor(t, w, "the instance", has(reg.ID()))

	leader := cl.Leader()
	leader.Kill()
	var rest []*etcdtest.Member
	for _, m := range cl.Members {
		if m != leader {
			rest = append(rest, m)
		}
	}
	cl.WaitLeaderAmong(etcdtest.ClusterReadyTimeout, rest...)
	// Another process registers through the surviving members; the watch sees it.
	reg2 := register(t, newClient(t, rest[0].Endpoint()), etcd.Registration{Name: "orders", Port: 8081, TTL: ttl})
	s := waitFor(t, w, "the instance registered after the leader loss", has(reg2.ID()))
	if !has(reg.ID())(s) {
		t.Fatalf("the first registration is gone after the leader loss: %s", ids(s))
	}
	// Both registrations outlive two more TTLs: the leases are renewed through the new leader.
	time.Sleep(2 * ttl)
	s, err := w.Next(t.Context(), 0)
	if err != nil || s.Err != nil || !has(reg.ID())(s) || !has(reg2.ID())(s) {
		t.Fatalf("after 2 TTLs: %s (%v, %v)", ids(s), s.Err, err)
	}
}

// A member cut off from the quorum: a watcher whose client can reach only that member keeps its
// last known list, with Err set and its age growing (linearizable, the default); after the heal it
// catches up with what changed meanwhile. With serializable reads the same watcher reports no
// error: the minority member answers with its frozen state (AP).
func TestClusterMinorityPartition(t *testing.T) {
	integration(t)
	cl := etcdtest.StartPartitionableCluster(t, 3)
	cut := cl.Follower()
	var rest []*etcdtest.Member
	for _, m := range cl.Members {
		if m != cut {
			rest = append(rest, m)
		}
	}
	majority := newClient(t, rest[0].Endpoint(), rest[1].Endpoint())
	pinned := newClient(t, cut.Endpoint())
	lin := watch(t, newRegistry(t, pinned), "orders")
	ser := watch(t, newRegistry(t, newClient(t, cut.Endpoint()), etcd.WithConsistency(etcd.Serializable)), "orders")
	reg := register(t, majority, etcd.Registration{Name: "orders", Port: 8080})
	// An instance registered through the member that will be cut off: its lease cannot be renewed
	// during the partition, so the majority drops it; after the heal it registers again.
	const ttl = 2 * time.Second
	stranded := register(t, pinned, etcd.Registration{Name: "orders", Port: 8090, TTL: ttl})
	maj := watch(t, newRegistry(t, majority), "orders")
	waitFor(t, maj, "the stranded instance on the majority side", has(stranded.ID()))
	before := waitFor(t, lin, "the instance", has(reg.ID()))
	waitFor(t, ser, "the instance (serializable)", has(reg.ID()))

	heal := cl.Isolate(cut)
	isolated := time.Now()
	down := waitFor(t, lin, "the cut-off watcher to report the failure", func(s discovery.Snapshot) bool { return s.Err != nil })
	t.Logf("minority side: failure shown %v after the last confirmation: %v", time.Since(down.Updated), down.Err)
	if !has(reg.ID())(discovery.Snapshot{Instances: down.Instances}) || down.Updated.Before(before.Updated) {
		t.Fatalf("the last known list was not kept: %+v", down)
	}
	// The majority goes on: a new instance registers there; the cut-off side cannot see it. (Isolate
	// takes a moment to stop everything: packets on connections the cut member opened reach it until
	// its unacknowledged window fills; wait until it has lost its leader.)
	cl.WaitLeaderAmong(etcdtest.ClusterReadyTimeout, rest...)
	for deadline := time.Now().Add(etcdtest.ClusterReadyTimeout); ; time.Sleep(100 * time.Millisecond) {
		if st, err := cut.Status(); err == nil && (st.Leader == "" || st.Leader == "0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the isolated member still has a leader")
		}
	}
	reg2 := register(t, majority, etcd.Registration{Name: "orders", Port: 8081})
	time.Sleep(2 * time.Second)
	s, _ := lin.Next(t.Context(), 0)
	if s.Err == nil || has(reg2.ID())(s) || !has(reg.ID())(discovery.Snapshot{Instances: s.Instances}) {
		t.Fatalf("minority side during the partition: %s (%v)", ids(s), s.Err)
	}
	if age := time.Since(s.Updated); age < 2*time.Second {
		t.Errorf("the list's age %v does not grow", age)
	}
	if s, _ := ser.Next(t.Context(), 0); s.Err != nil || has(reg2.ID())(s) {
		t.Errorf("serializable on the minority side: %s (%v), want the frozen list without error", ids(s), s.Err)
	}

	gone := waitFor(t, maj, "the stranded instance to expire on the majority side", func(s discovery.Snapshot) bool {
		return s.Err == nil && !has(stranded.ID())(s)
	})
	t.Logf("majority side: the stranded instance expired %v after the isolation", time.Since(isolated))
	if !has(reg2.ID())(gone) {
		t.Errorf("majority side: %s", ids(gone))
	}

	heal()
	healed := time.Now()
	waitFor(t, maj, "the stranded instance to register again after the heal", has(stranded.ID()))
	t.Logf("the stranded instance registered again %v after the heal", time.Since(healed))
	waitFor(t, lin, "the cut-off watcher to catch up", func(s discovery.Snapshot) bool { return has(reg.ID())(s) && has(reg2.ID())(s) })
	t.Logf("caught up %v after the heal", time.Since(healed))
	waitFor(t, ser, "the serializable watcher to catch up", has(reg2.ID()))
}
