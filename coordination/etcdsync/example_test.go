package etcdsync_test

import (
	"context"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudchassis/kit/coordination/dynconfig"
	"github.com/cloudchassis/kit/coordination/election"
	"github.com/cloudchassis/kit/coordination/etcdsync"
	"github.com/cloudchassis/kit/coordination/lock"
	"github.com/cloudchassis/kit/internal/etcdtest"
)

// exampleTB lets an Example start an etcd member (scripts/install-etcd.sh installs the binary);
// call done at the end to stop it.
type exampleTB struct{ cleanups []func() }

func (e *exampleTB) Helper()                   {}
func (e *exampleTB) Cleanup(f func())          { e.cleanups = append(e.cleanups, f) }
func (e *exampleTB) TempDir() string           { d, _ := os.MkdirTemp("", "example-"); return d }
func (e *exampleTB) Failed() bool              { return false }
func (e *exampleTB) Logf(string, ...any)       {}
func (e *exampleTB) Errorf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (e *exampleTB) Fatal(a ...any)            { panic(fmt.Sprint(a...)) }
func (e *exampleTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

// startExample starts a member and returns a client of it, and the function that stops both.
func startExample() (*clientv3.Client, func()) {
	tb := &exampleTB{}
	member := etcdtest.Start(tb)
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{member.Endpoint()}})
	if err != nil {
		panic(err)
	}
	return client, func() {
		_ = client.Close()
		for i := len(tb.cleanups) - 1; i >= 0; i-- {
			tb.cleanups[i]()
		}
	}
}

// Two workers take turns on one lock; the second holder's fencing token is higher, and a holder
// learns through Lost when its lease is revoked.
func Example() {
	client, stop := startExample()
	defer stop()

	ctx := context.Background()
	newLock := func() *etcdsync.Lock {
		l, err := etcdsync.New(client, "/locks/compaction", etcdsync.WithTTL(5*time.Second))
		if err != nil {
			panic(err)
		}
		return l
	}
	a, b := newLock(), newLock()
	defer a.Close(ctx)
	defer b.Close(ctx)

	t1, _ := a.Acquire(ctx)
	_ = a.Release(ctx)
	t2, _ := b.Acquire(ctx)
	fmt.Println("second token is higher:", t2 > t1)

	// An operator revokes b's lease (etcdctl lease revoke), or etcd expires it.
	keys, _ := client.Get(ctx, "/locks/compaction/", clientv3.WithPrefix())
	_, _ = client.Revoke(ctx, clientv3.LeaseID(keys.Kvs[0].Lease))
	<-b.Lost()
	fmt.Println(b.Err().(*lock.LostError).Reason)
	// Output:
	// second token is higher: true
	// session_invalidated
}

// An election on etcd: the Lock's value is the candidate's identity, and the Source reads the
// leader for Election.Leader and observers.
func ExampleNewSource() {
	client, stop := startExample()
	defer stop()

	ctx := context.Background()
	l, err := etcdsync.New(client, "/elections/catalog", etcdsync.WithValue([]byte("catalog-1")))
	if err != nil {
		panic(err)
	}
	elected := make(chan struct{})
	e, err := election.NewWith(l, etcdsync.NewSource(client, "/elections/catalog"),
		election.WithOnElected(func(ctx context.Context, token lock.Token) {
			close(elected)
			<-ctx.Done() // the singleton work runs until leadership ends
		}))
	if err != nil {
		panic(err)
	}
	_ = e.Start(ctx)
	defer e.Stop(ctx)
	<-elected
	leader, _ := e.Leader(ctx)
	fmt.Println("leader:", leader.Value)
	// Output:
	// leader: catalog-1
}

// dynconfig over etcd keys: a valid value is applied without a restart, an invalid one rejected.
func ExampleNewKV() {
	client, stop := startExample()
	defer stop()

	type settings struct {
		RateLimit float64 `envconfig:"RATE_LIMIT" default:"100" validate:"gt=0" reload:"true"`
	}
	ctx := context.Background()
	cfg, err := dynconfig.New[settings](etcdsync.NewKV(client), "config/orders")
	if err != nil {
		panic(err)
	}
	changed := make(chan struct{}, 1)
	defer cfg.Subscribe(func(dynconfig.Change[settings]) { changed <- struct{}{} })()
	_ = cfg.Start(ctx)
	defer cfg.Stop(ctx)

	_, _ = client.Put(ctx, "config/orders/RATE_LIMIT", "250")
	<-changed
	fmt.Println("rate limit:", cfg.Load().RateLimit)

	_, _ = client.Put(ctx, "config/orders/RATE_LIMIT", "-1")
	for cfg.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("after an invalid value:", cfg.Load().RateLimit)
	// Output:
	// rate limit: 250
	// after an invalid value: 250
}
