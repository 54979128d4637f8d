package etcd

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/cloudchassis/kit/telemetry/semconv"
	"github.com/cloudchassis/kit/telemetry/telemetrytest"
)

// fakeLeases is an in-memory lease API: grants fail while down, and the test ends a keep-alive (the
// lease lost) by closing its channel.
type fakeLeases struct {
	clientv3.Lease
	mu      sync.Mutex
	down    bool
	next    clientv3.LeaseID
	grants  int
	keys    map[string]clientv3.LeaseID
	alive   map[clientv3.LeaseID]chan *clientv3.LeaseKeepAliveResponse
	revoked []clientv3.LeaseID
}

func (f *fakeLeases) Grant(context.Context, int64) (*clientv3.LeaseGrantResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants++
	if f.down {
		return nil, errUnavailable
	}
	f.next++
	return &clientv3.LeaseGrantResponse{ID: f.next}, nil
}

// Put attaches key to the last lease granted (clientv3.Op does not expose its lease): the
// Registrar always writes under the lease it was just granted.
func (f *fakeLeases) Put(_ context.Context, key, _ string, _ ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys[key] = f.next
	return &clientv3.PutResponse{}, nil
}

func (f *fakeLeases) KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	ch := make(chan *clientv3.LeaseKeepAliveResponse)
	f.mu.Lock()
	f.alive[id] = ch
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.lose(id)
	}()
	return ch, nil
}

// lose closes the keep-alive of id, as clientv3 does when the lease is gone.
func (f *fakeLeases) lose(id clientv3.LeaseID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch := f.alive[id]; ch != nil {
		close(ch)
		delete(f.alive, id)
	}
}

func (f *fakeLeases) Revoke(_ context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, id)
	for k, l := range f.keys {
		if l == id {
			delete(f.keys, k)
		}
	}
	return &clientv3.LeaseRevokeResponse{}, nil
}

func (f *fakeLeases) Ctx() context.Context { return context.Background() }

// A lost lease is replaced: grants retried with full-jitter backoff while etcd fails (the failures
// gauge counts them), the key written under the new lease once one is granted (a "restore"
// registration), and Deregister revokes that lease.
func TestLostLeaseIsReplacedWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeLeases{keys: map[string]clientv3.LeaseID{}, alive: map[clientv3.LeaseID]chan *clientv3.LeaseKeepAliveResponse{}}
		rec := telemetrytest.NewRecorder()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(rec.Reader))
		r, err := newRegistrar(f, Registration{Name: "orders", ID: "o1", Address: "10.0.0.7", Port: 8080}, []Option{WithMeterProvider(mp)})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Register(t.Context()); err != nil {
			t.Fatal(err)
		}
		key := InstanceKey(DefaultPrefix, "orders", "o1")
		state := func() (grants int, lease clientv3.LeaseID) {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.grants, f.keys[key]
		}
		if g, l := state(); g != 1 || l != 1 {
			t.Fatalf("after Register: %d grants, key under lease %d", g, l)
		}
		svc := attribute.String(semconv.AttrPeerService, "orders")

		f.mu.Lock()
		f.down = true
		f.mu.Unlock()
		f.lose(1)
		const outage = 2 * time.Minute
		time.Sleep(outage)
		synctest.Wait()
		g, _ := state()
		if g-1 < 5 || g-1 > 60 {
			t.Errorf("%d grants in a %v outage, want a bounded backoff (5-60)", g-1, outage)
		}
		if n := rec.CounterValue(t, MetricRegistrationFailures, svc); int(n) != g-1 {
			t.Errorf("%s = %v after %d failed grants", MetricRegistrationFailures, n, g-1)
		}

		f.mu.Lock()
		f.down = false
		f.mu.Unlock()
		back := time.Now()
		for _, l := state(); l < 2; _, l = state() {
			time.Sleep(100 * time.Millisecond)
			if time.Since(back) > DefaultBackoffMax {
				t.Fatalf("not registered again %v after etcd came back", DefaultBackoffMax)
			}
		}
		if n := rec.CounterValue(t, MetricRegistrations, svc, attribute.String("reason", "restore")); n != 1 {
			t.Errorf("restore registrations = %v, want 1", n)
		}
		if n := rec.CounterValue(t, MetricRegistrationFailures, svc); n != 0 {
			t.Errorf("%s = %v once registered again", MetricRegistrationFailures, n)
		}
		_, lease := state()
		if err := r.Deregister(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, l := state(); l != 0 || f.revoked[len(f.revoked)-1] != lease {
			t.Errorf("after Deregister: key under lease %d, revoked %v (want the current lease %d)", l, f.revoked, lease)
		}
	})
}
