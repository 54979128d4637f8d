package coordinationtest_test

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/coordination/coordinationtest"
	"github.com/cloudchassis/kit/coordination/dynconfig"
	"github.com/cloudchassis/kit/coordination/lock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	_ lock.Client  = (*coordinationtest.Consul)(nil)
	_ dynconfig.KV = (*coordinationtest.Consul)(nil)
)

func TestSessionTTLAndLockDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := coordinationtest.New()
		ctx := context.Background()
		id, err := c.CreateSession(ctx, &api.SessionEntry{TTL: "10s", LockDelay: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := c.Acquire(ctx, &api.KVPair{Key: "k", Session: id}); !ok || err != nil {
			t.Fatalf("Acquire = %v, %v", ok, err)
		}
		// A blocking query wakes when the session expires.
		p, meta, err := c.Get(ctx, "k", nil)
		if err != nil || p.Session != id {
			t.Fatalf("Get = %+v, %v", p, err)
		}
		start := time.Now()
		p, _, err = c.Get(ctx, "k", &api.QueryOptions{WaitIndex: meta.LastIndex})
		if err != nil || p.Session != "" || time.Since(start) != 10*time.Second {
			t.Fatalf("after expiry: %+v, %v, after %v", p, err, time.Since(start))
		}
		other, _ := c.CreateSession(ctx, nil)
		if ok, _ := c.Acquire(ctx, &api.KVPair{Key: "k", Session: other}); ok {
			t.Fatal("acquired within lock-delay")
		}
		time.Sleep(2 * time.Second)
		if ok, _ := c.Acquire(ctx, &api.KVPair{Key: "k", Session: other}); !ok {
			t.Fatal("not acquired after lock-delay")
		}
		if se, _ := c.RenewSession(ctx, id); se != nil {
			t.Fatal("expired session renewed")
		}
		if _, err := c.Acquire(ctx, &api.KVPair{Key: "k", Session: id}); err == nil {
			t.Fatal("acquire with an expired session did not fail")
		}
	})
}

func TestBehaviorDeleteAndRelease(t *testing.T) {
	c := coordinationtest.New()
	ctx := context.Background()
	id, _ := c.CreateSession(ctx, &api.SessionEntry{Behavior: api.SessionBehaviorDelete})
	_, _ = c.Acquire(ctx, &api.KVPair{Key: "k", Session: id, Value: []byte("v")})
	if ok, _ := c.Release(ctx, &api.KVPair{Key: "k", Session: "nobody"}); ok {
		t.Fatal("released by a non-holder")
	}
	c.InvalidateSession(id)
	if c.Pair("k") != nil {
		t.Fatal("behavior delete kept the key")
	}
	pairs, _, _ := c.List(ctx, "", nil)
	if len(pairs) != 0 {
		t.Fatalf("List = %v", pairs)
	}
}

func Example() {
	c := coordinationtest.New()
	ctx := context.Background()
	c.Put("config/svc/LOG_LEVEL", "debug")
	id, _ := c.CreateSession(ctx, &api.SessionEntry{TTL: "10s"})
	ok, _ := c.Acquire(ctx, &api.KVPair{Key: "locks/job", Session: id})
	fmt.Println("acquired:", ok)
	c.InvalidateSession(id)
	fmt.Printf("holder after invalidation: %q\n", c.Pair("locks/job").Session)
	pairs, _, _ := c.List(ctx, "config/svc/", nil)
	fmt.Println(pairs[0].Key, string(pairs[0].Value))
	// Output:
	// acquired: true
	// holder after invalidation: ""
	// config/svc/LOG_LEVEL debug
}
