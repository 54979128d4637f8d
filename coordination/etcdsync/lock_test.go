package etcdsync_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"
	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/coordination/etcdsync"
	"github.com/cloudchassis/kit/coordination/lock"
	"github.com/cloudchassis/kit/internal/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Timing of the tests on real etcd: a short TTL, a margin of a second.
const (
	itTTL    = 3 * time.Second
	itMargin = time.Second
)

// newClient returns a client of the given endpoints, closed in t.Cleanup. Pinning a client to one
// member means giving it that member's endpoint only.
func newClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func newLock(t *testing.T, cli *clientv3.Client, key string, opts ...etcdsync.Option) *etcdsync.Lock {
	t.Helper()
	l, err := etcdsync.New(cli, key, append([]etcdsync.Option{etcdsync.WithTTL(itTTL), etcdsync.WithMargin(itMargin)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return l
}

func acquire(t *testing.T, l *etcdsync.Lock, timeout time.Duration) lock.Token {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tok, err := l.Acquire(ctx)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	return tok
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func TestNewValidates(t *testing.T) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for name, opts := range map[string][]etcdsync.Option{
		"fractional TTL": {etcdsync.WithTTL(2500 * time.Millisecond)},
		"short TTL":      {etcdsync.WithTTL(time.Second)},
		"zero margin":    {etcdsync.WithMargin(0)},
		"large margin":   {etcdsync.WithTTL(3 * time.Second), etcdsync.WithMargin(2 * time.Second)},
	} {
		if _, err := etcdsync.New(cli, "/locks/x", opts...); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := etcdsync.New(cli, ""); err == nil {
		t.Error("New accepted an empty key")
	}
}

func TestAcquireContendRelease(t *testing.T) {
	m := etcdtest.Start(t)
	cli := newClient(t, m.Endpoint())
	a := newLock(t, cli, "/locks/jobs", etcdsync.WithValue([]byte("a")))
	b := newLock(t, cli, "/locks/jobs", etcdsync.WithValue([]byte("b")))

	t1 := acquire(t, a, 5*time.Second)
	if got, ok := a.Token(); !ok || got != t1 {
		t.Fatalf("Token() = %v, %v; want %v, true", got, ok, t1)
	}
	if _, err := a.Acquire(context.Background()); !errors.Is(err, lock.ErrHeld) {
		t.Fatalf("second Acquire: %v, want lock.ErrHeld", err)
	}
	// b queues behind a and does not get the lock while a holds it.
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	_, err := b.Acquire(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("b acquired while a holds: %v", err)
	}
	// The cancelled Acquire revoked its lease: only a's key is under the prefix.
	r, err := cli.Get(context.Background(), "/locks/jobs/", clientv3.WithPrefix())
	if err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "a" {
		t.Fatalf("keys under the prefix after a cancelled Acquire: %v, %v; want a's only", r.Kvs, err)
	}

	got := make(chan lock.Token, 1)
	go func() {
		tok, err := b.Acquire(context.Background())
		if err != nil {
			t.Errorf("b: %v", err)
		}
		got <- tok
	}()
	time.Sleep(300 * time.Millisecond) // b is queued
	lost := a.Lost()
	if err := a.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !closed(lost) || a.Err() != nil {
		t.Fatalf("after Release: Lost closed %v, Err %v; want closed and nil", closed(lost), a.Err())
	}
	var t2 lock.Token
	select {
	case t2 = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("b did not get the released lock")
	}
	if t2 <= t1 {
		t.Fatalf("tokens %d then %d: want strictly increasing", t1, t2)
	}
	if err := a.Release(context.Background()); !errors.Is(err, lock.ErrNotHeld) {
		t.Fatalf("Release without a tenure: %v, want lock.ErrNotHeld", err)
	}
	if err := b.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if t3 := acquire(t, a, 5*time.Second); t3 <= t2 {
		t.Fatalf("tokens %d then %d: want strictly increasing", t2, t3)
	}
	// The lock survives longer than its TTL: keep-alives work.
	time.Sleep(2 * itTTL)
	if closed(a.Lost()) {
		t.Fatalf("lost after 2 TTLs: %v", a.Err())
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := a.Acquire(ctx); !errors.Is(err, lock.ErrClosed) {
		t.Fatalf("Acquire after Close: %v, want lock.ErrClosed", err)
	}
}

// Revoking the holder's lease (an operator's `etcdctl lease revoke`, or etcd expiring it) ends the
// tenure at once, with a *lock.LostError; Acquire again gets a higher token.
func TestLeaseRevokedIsLost(t *testing.T) {
	m := etcdtest.Start(t)
	cli := newClient(t, m.Endpoint())
	l := newLock(t, cli, "/locks/revoke")
	t1 := acquire(t, l, 5*time.Second)
	r, err := cli.Get(context.Background(), "/locks/revoke/", clientv3.WithPrefix())
	if err != nil || len(r.Kvs) != 1 {
		t.Fatalf("holder key: %v, %v", r, err)
	}
	if r.Kvs[0].CreateRevision != int64(t1) {
		t.Fatalf("token %d, key's CreateRevision %d: want equal", t1, r.Kvs[0].CreateRevision)
	}
	revoked := time.Now()
	if _, err := cli.Revoke(context.Background(), clientv3.LeaseID(r.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
	case <-time.After(itTTL):
		t.Fatal("Lost not closed after the lease was revoked")
	}
	t.Logf("lost %v after the revoke", time.Since(revoked))
	var lost *lock.LostError
	if !errors.As(l.Err(), &lost) || !errors.Is(l.Err(), lock.ErrLost) || lost.Reason != lock.ReasonSessionInvalidated || lost.Token != t1 {
		t.Fatalf("Err() = %v; want a *lock.LostError for token %d, reason %s", l.Err(), t1, lock.ReasonSessionInvalidated)
	}
	if _, ok := l.Token(); ok {
		t.Fatal("Token() still reports the lost lock")
	}
	if t2 := acquire(t, l, 5*time.Second); t2 <= t1 {
		t.Fatalf("tokens %d then %d: want strictly increasing", t1, t2)
	}
}

// Deleting the holder's key (not its lease) is a loss too.
func TestKeyDeletedIsLost(t *testing.T) {
	m := etcdtest.Start(t)
	cli := newClient(t, m.Endpoint())
	l := newLock(t, cli, "/locks/delete")
	acquire(t, l, 5*time.Second)
	if _, err := cli.Delete(context.Background(), "/locks/delete/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
	case <-time.After(itTTL):
		t.Fatal("Lost not closed after the key was deleted")
	}
	var lost *lock.LostError
	if !errors.As(l.Err(), &lost) || lost.Reason != lock.ReasonKeyLost {
		t.Fatalf("Err() = %v; want reason %s", l.Err(), lock.ReasonKeyLost)
	}
	if err := l.Release(context.Background()); !errors.Is(err, lock.ErrLost) {
		t.Fatalf("Release after a loss: %v, want the LostError", err)
	}
}

// A namespaced client (clientv3/namespace on the client's KV, Lease and Watcher) keeps the lock's
// keys under its prefix; locks of the same key in two namespaces are independent.
func TestNamespacedClients(t *testing.T) {
	m := etcdtest.Start(t)
	raw := newClient(t, m.Endpoint())
	tenant := func(pfx string) *clientv3.Client {
		cli := newClient(t, m.Endpoint())
		cli.KV, cli.Lease, cli.Watcher = namespace.NewKV(cli.KV, pfx), namespace.NewLease(cli.Lease, pfx), namespace.NewWatcher(cli.Watcher, pfx)
		return cli
	}
	a := newLock(t, tenant("/tenant-a"), "/locks/jobs")
	b := newLock(t, tenant("/tenant-b"), "/locks/jobs")
	acquire(t, a, 5*time.Second)
	acquire(t, b, 5*time.Second)
	for _, pfx := range []string{"/tenant-a/locks/jobs/", "/tenant-b/locks/jobs/"} {
		if r, err := raw.Get(context.Background(), pfx, clientv3.WithPrefix()); err != nil || len(r.Kvs) != 1 {
			t.Fatalf("keys under %s: %v, %v; want the holder's", pfx, r, err)
		}
	}
}
