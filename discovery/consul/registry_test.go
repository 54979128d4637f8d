package consul_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/consul"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errDown = errors.New("connect: connection refused")

func newRegistry(t *testing.T, h consul.Health, opts ...consul.Option) *consul.Registry {
	t.Helper()
	r, err := consul.NewRegistry(h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func watch(t *testing.T, r *consul.Registry, service string, opts ...consul.WatchOption) *consul.Watcher {
	t.Helper()
	w, err := r.Watch(service, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// next calls Next with a deadline so a broken watcher fails the test instead of hanging it.
func next(t *testing.T, w discovery.Watcher, after uint64) discovery.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	s, err := w.Next(ctx, after)
	if err != nil {
		t.Fatalf("Next(%d): %v", after, err)
	}
	return s
}

func ids(s discovery.Snapshot) []string {
	out := make([]string, len(s.Instances))
	for i, in := range s.Instances {
		out[i] = in.ID
	}
	return out
}

func TestWatchArrivalDepartureAndEmptyService(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHealth()
		r := newRegistry(t, h)
		w := watch(t, r, "svc")

		s := next(t, w, 0)
		if s.Version != 1 || len(s.Instances) != 0 || s.Err != nil {
			t.Fatalf("first snapshot of an unknown service = %+v; want version 1, empty, no error", s)
		}
		h.add("a", "10.0.0.1", 80)
		s = next(t, w, s.Version)
		if got := ids(s); len(got) != 1 || got[0] != "a" || s.Instances[0].HostPort() != "10.0.0.1:80" {
			t.Fatalf("after add: %v", s.Instances)
		}
		h.add("b", "", 81) // no service address: the node's is used
		s = next(t, w, s.Version)
		if got := ids(s); len(got) != 2 || s.Instances[1].Address != "127.0.0.1" || s.Instances[1].Weight != 1 {
			t.Fatalf("after second add: %+v", s.Instances)
		}
		h.remove("a")
		h.remove("b")
		// The last instance leaving must be seen (Kratos #3562): an empty list is a real answer.
		for len(s.Instances) != 0 {
			s = next(t, w, s.Version)
		}
		if s.Err != nil {
			t.Fatalf("empty service reported as error: %v", s.Err)
		}
	})
}

func TestUnchangedAnswerPublishesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHealth()
		h.add("a", "10.0.0.1", 80)
		r := newRegistry(t, h)
		w := watch(t, r, "svc", consul.WithWaitTime(time.Second))
		s := next(t, w, 0)
		// Ten blocking queries time out with the same data: no new version, but Updated moves.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
		defer cancel()
		if got, err := w.Next(ctx, s.Version); err == nil {
			t.Fatalf("unchanged data published version %d", got.Version)
		}
		if calls := h.callCount(); calls < 9 || calls > 12 {
			t.Errorf("%d queries in 10 s with a 1 s wait; want about 10", calls)
		}
		s2, _ := w.Next(t.Context(), 0)
		if !s2.Updated.After(s.Updated) || s2.Version != s.Version {
			t.Errorf("Updated not refreshed by confirmations: %v -> %v (version %d -> %d)", s.Updated, s2.Updated, s.Version, s2.Version)
		}
	})
}

func TestFailedFirstQueryDoesNotFreeze(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHealth()
		h.add("a", "10.0.0.1", 80)
		h.setErr(errDown)
		r := newRegistry(t, h)
		w := watch(t, r, "svc")
		s := next(t, w, 0)
		if s.Err == nil || !errors.Is(s.Err, errDown) || len(s.Instances) != 0 {
			t.Fatalf("first snapshot after a failed query = %+v; want empty with the error", s)
		}
		h.setErr(nil)
		s = next(t, w, s.Version)
		if s.Err != nil || len(s.Instances) != 1 {
			t.Fatalf("after recovery: %+v", s)
		}
	})
}

func TestOutageKeepsLastKnownListWithBoundedRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		h := newFakeHealth()
		h.add("a", "10.0.0.1", 80)
		r := newRegistry(t, h, consul.WithMeterProvider(mp))
		w := watch(t, r, "svc")
		s := next(t, w, 0)
		time.Sleep(3 * time.Second) // the blocking query is connected
		before := h.callCount()

		h.setErr(errDown)
		down := time.Now()
		s = next(t, w, s.Version)
		if !errors.Is(s.Err, errDown) || len(s.Instances) != 1 {
			t.Fatalf("during outage = %+v; want the last list with the error", s)
		}
		if !s.Updated.Equal(down) {
			t.Errorf("Updated = %v, want the moment the connected query broke (%v)", s.Updated, down)
		}
		time.Sleep(60 * time.Second)
		synctest.Wait()
		calls := h.callCount() - before
		// Backoff 250 ms doubling to a 10 s cap with full jitter: about a dozen tries per minute. A tight
		// loop would make millions in a minute of fake time.
		if calls < 4 || calls > 25 {
			t.Errorf("%d queries during a 60 s outage; want a bounded, backed-off number (4-25)", calls)
		}
		if age := gauge(t, reader, semconv.MetricDiscoverySnapshotAge); age < 59 || age > 61 {
			t.Errorf("%s = %v s after 60 s of outage", semconv.MetricDiscoverySnapshotAge, age)
		}
		if n := gauge(t, reader, semconv.MetricDiscoveryInstances); n != 1 {
			t.Errorf("%s = %v during outage, want the last known 1", semconv.MetricDiscoveryInstances, n)
		}
		// The query that was connected when the outage began fails too.
		if n := counter(t, reader, semconv.MetricDiscoveryErrors); n != int64(calls)+1 {
			t.Errorf("%s = %d, want %d", semconv.MetricDiscoveryErrors, n, calls+1)
		}
		cur, _ := w.Next(t.Context(), 0)
		if cur.Version != s.Version {
			t.Errorf("repeated failures published new versions: %d -> %d", s.Version, cur.Version)
		}

		h.setErr(nil)
		recovered := time.Now()
		s = next(t, w, s.Version)
		if s.Err != nil || len(s.Instances) != 1 {
			t.Fatalf("after recovery = %+v", s)
		}
		// The first query after errors does not block: recovery is seen as soon as the backoff ends.
		if d := time.Since(recovered); d > consul.DefaultBackoffMax {
			t.Errorf("recovery took %v, more than the backoff cap", d)
		}
		if age := gauge(t, reader, semconv.MetricDiscoverySnapshotAge); age != 0 {
			t.Errorf("age %v after recovery, want 0", age)
		}
	})
}

func TestNoTightLoopOnFlappingIndex(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHealth()
		h.add("a", "10.0.0.1", 80)
		h.flap = true
		r := newRegistry(t, h, consul.WithMinInterval(100*time.Millisecond))
		w := watch(t, r, "svc")
		next(t, w, 0)
		start := h.callCount()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		// One query per 100 ms plus the burst of 3 (partly spent on the first answers).
		if calls := h.callCount() - start; calls < 90 || calls > 104 {
			t.Errorf("%d queries in 10 s against a server that answers at once; the 100 ms minimum interval allows about 100", calls)
		}
	})
}

func TestIndexRules(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHealth()
		h.add("a", "10.0.0.1", 80) // index 2
		r := newRegistry(t, h)
		w := watch(t, r, "svc")
		s := next(t, w, 0)
		time.Sleep(time.Second)
		synctest.Wait()
		if q := h.lastQuery(); q.WaitIndex != 2 {
			t.Fatalf("blocking on index %d, want 2", q.WaitIndex)
		}

		// The index goes backwards (a restored snapshot): start over with a non-blocking read.
		h.mu.Lock()
		h.queries = nil
		h.mu.Unlock()
		h.setIndex(1)
		time.Sleep(time.Second)
		synctest.Wait()
		var sawReset bool
		h.mu.Lock()
		for _, q := range h.queries {
			sawReset = sawReset || q.WaitIndex == 0
		}
		h.mu.Unlock()
		if !sawReset {
			t.Error("index went backwards but no query started over from 0")
		}

		// An index of 0 must never be blocked on (it returns at once, forever).
		h.setIndex(0)
		time.Sleep(time.Second)
		synctest.Wait()
		if q := h.lastQuery(); q.WaitIndex != 1 {
			t.Errorf("after an index of 0 the watch blocks on %d, want 1", q.WaitIndex)
		}
		h.add("b", "10.0.0.2", 80)
		s = next(t, w, s.Version)
		if len(s.Instances) != 2 {
			t.Errorf("watch stuck after index resets: %v", ids(s))
		}
	})
}

func TestHungQueryTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHealth()
		h.hang = true
		r := newRegistry(t, h)
		w := watch(t, r, "svc", consul.WithWaitTime(16*time.Second))
		start := time.Now()
		s := next(t, w, 0)
		if !errors.Is(s.Err, context.DeadlineExceeded) {
			t.Fatalf("snapshot after a hung query: %+v", s)
		}
		// wait + wait/16 + 5 s of slack.
		if d := time.Since(start); d != 22*time.Second {
			t.Errorf("hung query abandoned after %v, want 22s", d)
		}
	})
}

func TestMaxStaleness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHealth()
		h.add("a", "10.0.0.1", 80)
		r := newRegistry(t, h)
		w := watch(t, r, "svc", consul.WithMaxStaleness(30*time.Second))
		s := next(t, w, 0)
		time.Sleep(time.Second) // the blocking query is connected
		h.setErr(errDown)
		down := time.Now()
		s = next(t, w, s.Version) // the error snapshot, still with the list
		if len(s.Instances) != 1 {
			t.Fatalf("list dropped at once: %+v", s)
		}
		s = next(t, w, s.Version)
		if d := time.Since(down); d != 30*time.Second {
			t.Errorf("list dropped after %v, want 30s", d)
		}
		if len(s.Instances) != 0 || !errors.Is(s.Err, discovery.ErrStale) || !errors.Is(s.Err, errDown) {
			t.Fatalf("after max staleness = %+v; want empty, ErrStale wrapping the cause", s)
		}
		h.setErr(nil)
		s = next(t, w, s.Version)
		if len(s.Instances) != 1 || s.Err != nil {
			t.Fatalf("after recovery = %+v", s)
		}
	})
}

func TestSharedQueryAndRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHealth()
		r := newRegistry(t, h)
		w1 := watch(t, r, "svc", consul.WithTags("b", "a"))
		w2 := watch(t, r, "svc", consul.WithTags("a", "b"))
		next(t, w1, 0)
		next(t, w2, 0)
		synctest.Wait()
		// One loop: its first, non-blocking read and the blocking query that follows.
		if n := h.callCount(); n != 2 {
			t.Fatalf("%d queries for two watchers of the same service and tags; want 2 from one shared loop", n)
		}
		w3 := watch(t, r, "svc", consul.WithTags("c"))
		next(t, w3, 0)
		synctest.Wait()
		if n := h.callCount(); n != 4 {
			t.Fatalf("%d queries with a second tag set; want 4 from two loops", n)
		}

		// Closing one handle leaves the shared query running for the other.
		_ = w1.Close()
		if _, err := w1.Next(t.Context(), 0); !errors.Is(err, discovery.ErrClosed) {
			t.Fatalf("Next on a closed handle: %v", err)
		}
		h.add("x", "10.0.0.9", 1)
		if s := next(t, w2, 1); len(s.Instances) != 1 {
			t.Fatalf("w2 after w1 closed: %+v", s)
		}

		// A blocked Next returns when its handle is closed.
		errc := make(chan error, 1)
		go func() {
			_, err := w2.Next(context.Background(), 100)
			errc <- err
		}()
		synctest.Wait()
		_ = w2.Close()
		if err := <-errc; !errors.Is(err, discovery.ErrClosed) {
			t.Fatalf("blocked Next after Close: %v", err)
		}
		synctest.Wait()
		h.mu.Lock()
		before := len(h.tags)
		h.mu.Unlock()
		h.add("y", "10.0.0.8", 1)
		time.Sleep(time.Second)
		synctest.Wait()
		h.mu.Lock()
		for _, tags := range h.tags[before:] {
			if len(tags) != 1 || tags[0] != "c" {
				t.Errorf("released watch still querying (tags %v)", tags)
			}
		}
		h.mu.Unlock()

		_ = r.Close()
		if _, err := w3.Next(t.Context(), 0); !errors.Is(err, discovery.ErrClosed) {
			t.Errorf("Next after Registry.Close: %v", err)
		}
		if _, err := r.Watch("svc"); !errors.Is(err, discovery.ErrClosed) {
			t.Errorf("Watch after Close: %v", err)
		}
		_ = w3.Close() // after the registry closed: harmless
	})
}

func TestQueryOptions(t *testing.T) {
	cases := []struct {
		opts  []consul.WatchOption
		check func(t *testing.T, q api.QueryOptions, tags []string)
	}{
		{nil, func(t *testing.T, q api.QueryOptions, tags []string) {
			if !q.AllowStale || q.RequireConsistent || q.UseCache || q.WaitTime != consul.DefaultWaitTime || len(tags) != 0 {
				t.Errorf("defaults: %+v tags %v", q, tags)
			}
		}},
		{[]consul.WatchOption{consul.WithConsistency(consul.Consistent)}, func(t *testing.T, q api.QueryOptions, _ []string) {
			if q.AllowStale || !q.RequireConsistent {
				t.Errorf("consistent: %+v", q)
			}
		}},
		{[]consul.WatchOption{consul.WithConsistency(consul.Leader)}, func(t *testing.T, q api.QueryOptions, _ []string) {
			if q.AllowStale || q.RequireConsistent || q.UseCache {
				t.Errorf("leader: %+v", q)
			}
		}},
		{[]consul.WatchOption{consul.WithConsistency(consul.Cached)}, func(t *testing.T, q api.QueryOptions, _ []string) {
			if !q.UseCache {
				t.Errorf("cached: %+v", q)
			}
		}},
		{[]consul.WatchOption{
			consul.WithTags("v2"), consul.WithDatacenter("dc2"), consul.WithWaitTime(time.Hour),
			consul.WithFilter(consul.MetaFilter("zone", "a")), consul.WithFilter(`"x" in Service.Tags`),
		}, func(t *testing.T, q api.QueryOptions, tags []string) {
			if q.Datacenter != "dc2" || q.WaitTime != 10*time.Minute || len(tags) != 1 || tags[0] != "v2" {
				t.Errorf("options: %+v tags %v", q, tags)
			}
			if want := "(Service.Meta[`zone`] == `a`) and (\"x\" in Service.Tags)"; q.Filter != want {
				t.Errorf("filter %q, want %q", q.Filter, want)
			}
		}},
	}
	for i, c := range cases {
		t.Run(string(rune('0'+i)), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newFakeHealth()
				r := newRegistry(t, h)
				w := watch(t, r, "svc", c.opts...)
				next(t, w, 0)
				h.mu.Lock()
				q, tags := h.queries[0], h.tags[0]
				h.mu.Unlock()
				c.check(t, q, tags)
			})
		})
	}
}

func gauge(t *testing.T, r *sdkmetric.ManualReader, name string) float64 {
	t.Helper()
	for _, dp := range points(t, r, name) {
		return dp
	}
	t.Fatalf("metric %s not recorded", name)
	return 0
}

func counter(t *testing.T, r *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	var sum float64
	for _, dp := range points(t, r, name) {
		sum += dp
	}
	return int64(sum)
}

func points(t *testing.T, r *sdkmetric.ManualReader, name string) []float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var out []float64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					checkServiceAttr(t, p.Attributes)
					out = append(out, p.Value)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					checkServiceAttr(t, p.Attributes)
					out = append(out, float64(p.Value))
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					checkServiceAttr(t, p.Attributes)
					out = append(out, float64(p.Value))
				}
			}
		}
	}
	return out
}

func checkServiceAttr(t *testing.T, set attribute.Set) {
	t.Helper()
	if v, ok := set.Value(semconv.AttrPeerService); !ok || v.AsString() == "" {
		t.Errorf("data point without %s: %v", semconv.AttrPeerService, set.ToSlice())
	}
}

// collect gathers every snapshot a watcher publishes until stop is closed.
func collect(t *testing.T, w discovery.Watcher, after uint64) (get func() []discovery.Snapshot) {
	t.Helper()
	var (
		mu   sync.Mutex
		seen []discovery.Snapshot
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			s, err := w.Next(ctx, after)
			if err != nil {
				return
			}
			after = s.Version
			mu.Lock()
			seen = append(seen, s)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []discovery.Snapshot {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

func TestEmptyAnswerAfterAgentRestartIsHeldUntilInstancesReturn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHealth()
		h.add("a", "10.0.0.1", 80)
		h.add("b", "10.0.0.2", 80)
		r := newRegistry(t, h)
		w := watch(t, r, "svc")
		s := next(t, w, 0)
		seen := collect(t, w, s.Version)
		time.Sleep(time.Second) // the blocking query is connected

		// The agent dies and comes back without its state: its index starts over, its list is empty.
		h.setErr(errDown)
		time.Sleep(2 * time.Second)
		h.restart(3)
		h.setErr(nil)
		time.Sleep(consul.DefaultBackoffMax + time.Second) // the watch has its empty answer by now
		synctest.Wait()
		cur, _ := w.Next(t.Context(), 0)
		if len(cur.Instances) != 2 || !errors.Is(cur.Err, consul.ErrUnconfirmedEmpty) {
			t.Fatalf("after an empty answer from a restarted agent: %d instances, err %v; want the last 2 with ErrUnconfirmedEmpty", len(cur.Instances), cur.Err)
		}

		// One instance registers again: published at once, error-free.
		h.add("b", "10.0.0.2", 80)
		synctest.Wait()
		cur, _ = w.Next(t.Context(), 0)
		if got := ids(cur); len(got) != 1 || got[0] != "b" || cur.Err != nil {
			t.Fatalf("after re-registration: %v, err %v", got, cur.Err)
		}
		for _, s := range seen() {
			if len(s.Instances) == 0 {
				t.Errorf("an empty list was published (version %d, err %v)", s.Version, s.Err)
			}
		}
		// Later departures are real and published at once.
		h.remove("b")
		synctest.Wait()
		if cur, _ = w.Next(t.Context(), 0); len(cur.Instances) != 0 || cur.Err != nil {
			t.Errorf("a departure while connected: %v, err %v; want an empty, error-free list", ids(cur), cur.Err)
		}
	})
}

func TestEmptyAnswerAfterResetIsPublishedAfterTheGrace(t *testing.T) {
	for _, c := range []struct {
		name  string
		grace time.Duration
		opts  []consul.WatchOption
	}{
		{"default", consul.DefaultResetGrace, nil},
		{"5s", 5 * time.Second, []consul.WatchOption{consul.WithResetGrace(5 * time.Second)}},
		{"off", 0, []consul.WatchOption{consul.WithResetGrace(0)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newFakeHealth()
				h.add("a", "10.0.0.1", 80)
				r := newRegistry(t, h)
				w := watch(t, r, "svc", c.opts...)
				s := next(t, w, 0)
				time.Sleep(time.Second)

				// A snapshot restore: the index goes backwards and the service is gone, with no error.
				h.restart(1)
				restored := time.Now()
				s = next(t, w, s.Version)
				if c.grace > 0 {
					if len(s.Instances) != 1 || !errors.Is(s.Err, consul.ErrUnconfirmedEmpty) || !s.Updated.Before(restored) {
						t.Fatalf("right after the restore: %+v; want the last list with ErrUnconfirmedEmpty and its old Updated", s)
					}
					s = next(t, w, s.Version)
				}
				if len(s.Instances) != 0 || s.Err != nil {
					t.Fatalf("after the grace: %+v; want an empty, error-free list (a real empty service)", s)
				}
				if d := time.Since(restored); d < c.grace || d > c.grace+time.Second {
					t.Errorf("empty list published %v after the restore; want the grace, %v", d, c.grace)
				}
			})
		})
	}
}

func TestEmptyAnswerAfterOutageWithNothingToKeep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newFakeHealth()
		r := newRegistry(t, h)
		w := watch(t, r, "svc")
		s := next(t, w, 0)
		time.Sleep(time.Second)
		h.setErr(errDown)
		s = next(t, w, s.Version)
		h.setErr(nil)
		start := time.Now()
		s = next(t, w, s.Version)
		if len(s.Instances) != 0 || s.Err != nil || time.Since(start) > consul.DefaultBackoffMax {
			t.Fatalf("an empty service after an outage: %+v after %v; want the empty list confirmed at once", s, time.Since(start))
		}
	})
}
