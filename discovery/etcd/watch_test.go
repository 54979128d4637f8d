package etcd

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudchassis/kit/discovery"
)

// fakeEtcd is an in-memory KV and Watcher for the watch loop's timing under testing/synctest: the
// list answers with one instance or fails, and the watch stream answers progress requests or stays
// silent, as a dead or cut-off etcd's stream does while clientv3 reconnects it.
type fakeEtcd struct {
	clientv3.KV
	mu      sync.Mutex
	down    bool // lists fail and progress requests go unanswered
	lists   int
	streams []chan clientv3.WatchResponse
}

var errUnavailable = errors.New("rpc error: code = Unavailable desc = connection refused")

func (f *fakeEtcd) Get(ctx context.Context, key string, _ ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	if f.down {
		return nil, errUnavailable
	}
	return &clientv3.GetResponse{Header: &pb.ResponseHeader{Revision: 7}, Kvs: []*mvccpb.KeyValue{{
		Key: []byte(key + "a"), Value: []byte(`{"id":"a","address":"10.0.0.1","port":80}`)}}}, nil
}

func (f *fakeEtcd) Watch(ctx context.Context, _ string, _ ...clientv3.OpOption) clientv3.WatchChan {
	ch := make(chan clientv3.WatchResponse, 1)
	f.mu.Lock()
	f.streams = append(f.streams, ch)
	f.mu.Unlock()
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, c := range f.streams {
			if c == ch {
				f.streams = append(f.streams[:i], f.streams[i+1:]...)
				close(ch)
			}
		}
	}()
	return ch
}

func (f *fakeEtcd) RequestProgress(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil
	}
	for _, c := range f.streams {
		select {
		case c <- clientv3.WatchResponse{Header: &pb.ResponseHeader{Revision: 7}}:
		default:
		}
	}
	return nil
}

func (f *fakeEtcd) Close() error { return nil }

func (f *fakeEtcd) set(down bool) (lists int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
	return f.lists
}

// A healthy idle watch is kept alive by progress requests: no new list, Updated keeps moving. A
// silent stream (etcd dead) fails after two progress intervals: the last list is kept with Err and
// Updated frozen at the last word, lists back off (full jitter up to DefaultBackoffMax) and the
// watch recovers at the first list that succeeds.
func TestSilentStreamFailsAndBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeEtcd{}
		r, err := newRegistry(f, f, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		w, err := r.Watch("svc")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		s, err := w.Next(t.Context(), 0)
		if err != nil || s.Err != nil || len(s.Instances) != 1 {
			t.Fatalf("first snapshot %+v, %v", s, err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		snap := func() discovery.Snapshot {
			w.w.mu.Lock()
			defer w.w.mu.Unlock()
			return w.w.feed.Cur
		}
		if cur := snap(); cur.Version != 1 || cur.Err != nil || time.Since(cur.Updated) > DefaultProgressInterval {
			t.Fatalf("idle healthy watch after a minute: version %d, err %v, updated %v ago", cur.Version, cur.Err, time.Since(cur.Updated))
		}
		if n := f.set(false); n != 1 {
			t.Fatalf("%d lists while the stream was healthy, want 1", n)
		}

		before := f.set(true)
		lastWord := snap().Updated
		s, err = w.Next(t.Context(), 1)
		if err != nil || s.Err == nil || !errors.Is(s.Err, errSilent) || len(s.Instances) != 1 {
			t.Fatalf("after the stream went silent: %+v, %v", s, err)
		}
		if took := time.Since(lastWord); took != 2*DefaultProgressInterval {
			t.Errorf("failure shown %v after the last word, want 2 progress intervals (%v)", took, 2*DefaultProgressInterval)
		}
		if !s.Updated.Equal(lastWord) {
			t.Errorf("Updated %v, want the last word %v", s.Updated, lastWord)
		}
		const outage = 2 * time.Minute
		time.Sleep(outage)
		lists := f.set(false) - before
		// Full jitter: the mean delay reaches 5 s after 6 failures; 2 minutes hold ~25 on average.
		if lists < 5 || lists > 60 {
			t.Errorf("%d lists in a %v outage, want a bounded backoff (5-60)", lists, outage)
		}
		if cur := snap(); cur.Err == nil || cur.Version != 2 || !cur.Updated.Equal(lastWord) {
			t.Errorf("during the outage: version %d (want 2: one error snapshot), err %v, updated %v", cur.Version, cur.Err, cur.Updated)
		}
		recovering := time.Now()
		s, err = w.Next(t.Context(), 2)
		if err != nil || s.Err != nil || len(s.Instances) != 1 {
			t.Fatalf("after the outage: %+v, %v", s, err)
		}
		if took := time.Since(recovering); took > DefaultBackoffMax {
			t.Errorf("recovered %v after etcd came back, want within the backoff cap %v", took, DefaultBackoffMax)
		}
		t.Logf("%d lists in a %v outage; recovered %v after etcd came back", lists, outage, time.Since(recovering))
	})
}
