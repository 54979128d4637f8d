package lb

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudchassis/kit/discovery"
)

// Critical values of the chi-square distribution at p = 0.001: a correct balancer exceeds them once
// in a thousand seeds, and the seeds are fixed, so the tests are deterministic.
var chi2Crit = map[int]float64{3: 16.27, 4: 18.47, 9: 27.88}

func TestRoundRobinIsExact(t *testing.T) {
	b := mustFixed(t, instances(5), WithPolicy(RoundRobin))
	counts := pickN(t, b, context.Background(), 5*1000)
	for id, n := range counts {
		if n != 1000 {
			t.Errorf("%s picked %d times, want 1000", id, n)
		}
	}
}

func TestRoundRobinWeightedInterleaves(t *testing.T) {
	insts := instances(3)
	for i := range insts {
		insts[i].Weight = i + 1 // 1, 2, 3
	}
	b := mustFixed(t, insts, WithPolicy(RoundRobin))
	var seq []string
	for range 6 * 100 {
		e, err := b.Pick(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		seq = append(seq, e.key)
		e.Release()
	}
	counts := map[string]int{}
	for _, id := range seq {
		counts[id]++
	}
	if counts["i0"] != 100 || counts["i1"] != 200 || counts["i2"] != 300 {
		t.Fatalf("counts %v, want 100/200/300", counts)
	}
	// Interleaved: the heaviest instance never runs more than twice in a row (a burst schedule would
	// give it three).
	for i := 2; i < len(seq); i++ {
		if seq[i] == seq[i-1] && seq[i] == seq[i-2] {
			t.Fatalf("three picks in a row of %s at %d: %v", seq[i], i, seq[:12])
		}
	}
}

func TestRandomWeightedChiSquare(t *testing.T) {
	insts := instances(4)
	shares := map[string]float64{}
	for i := range insts {
		insts[i].Weight = i + 1 // 1..4, total 10
		shares[insts[i].ID] = float64(i+1) / 10
	}
	b := mustFixed(t, insts, WithPolicy(Random), seeded())
	const n = 100_000
	counts := pickN(t, b, context.Background(), n)
	if x2 := chiSquare(counts, shares, n); x2 > chi2Crit[3] {
		t.Fatalf("chi-square %.1f > %.1f: counts %v", x2, chi2Crit[3], counts)
	}
	// The same statistic rejects a uniform pick, so the test can fail.
	uniform := map[string]int{"i0": n / 4, "i1": n / 4, "i2": n / 4, "i3": n / 4}
	if x2 := chiSquare(uniform, shares, n); x2 <= chi2Crit[3] {
		t.Fatalf("chi-square cannot tell uniform from weighted: %.1f", x2)
	}
}

func TestUniformPoliciesChiSquare(t *testing.T) {
	for _, p := range []string{Random, P2C, LeastRequest, RingHash} {
		t.Run(p, func(t *testing.T) {
			insts := instances(10)
			shares := map[string]float64{}
			for _, in := range insts {
				shares[in.ID] = 0.1
			}
			b := mustFixed(t, insts, WithPolicy(p), seeded())
			const n = 50_000
			counts := map[string]int{}
			for range n {
				e, err := b.Pick(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				counts[e.key]++
				e.Done(time.Millisecond, nil) // equal latencies: P2C must spread evenly
			}
			if x2 := chiSquare(counts, shares, n); x2 > chi2Crit[9] {
				t.Fatalf("chi-square %.1f > %.1f: counts %v", x2, chi2Crit[9], counts)
			}
		})
	}
}

func TestLeastRequestBalancesInFlight(t *testing.T) {
	b := mustFixed(t, instances(10), WithPolicy(LeastRequest), seeded())
	var held []*Endpoint
	for range 1000 { // nothing is released: in-flight counts decide
		e, err := b.Pick(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, e)
	}
	lo, hi := int64(math.MaxInt64), int64(0)
	for _, e := range b.table.Load().Endpoints {
		n := e.inflight.Load()
		lo, hi = min(lo, n), max(hi, n)
	}
	// Two choices keep the gap to O(log log n); random placement would be around ±30.
	if hi-lo > 4 {
		t.Fatalf("in flight ranges %d..%d", lo, hi)
	}
	for _, e := range held {
		e.Release()
	}
}

func TestRingHashStableAndMinimalMovement(t *testing.T) {
	const keys = 20_000
	place := func(b *Balancer) map[string]string {
		m := make(map[string]string, keys)
		for k := range keys {
			key := fmt.Sprintf("user-%d", k)
			e, err := b.Pick(WithHashKey(context.Background(), key))
			if err != nil {
				t.Fatal(err)
			}
			m[key] = e.key
			e.Release()
		}
		return m
	}
	insts := instances(10)
	b := mustFixed(t, insts, WithPolicy(RingHash))
	before := place(b)
	if again := place(b); fmt.Sprint(again) != fmt.Sprint(before) {
		t.Fatal("mapping changed while the set was stable")
	}
	perInstance := map[string]int{}
	for _, id := range before {
		perInstance[id]++
	}
	for id, n := range perInstance { // 160 points each: every share within ±35% of the fair 10%
		if n < keys/10*65/100 || n > keys/10*135/100 {
			t.Errorf("%s owns %d of %d keys", id, n, keys)
		}
	}

	// A different snapshot order gives the same ring.
	reversed := append([]discovery.Instance(nil), insts...)
	for i, j := 0, len(reversed)-1; i < j; i, j = i+1, j-1 {
		reversed[i], reversed[j] = reversed[j], reversed[i]
	}
	b.update(reversed)
	if again := place(b); fmt.Sprint(again) != fmt.Sprint(before) {
		t.Fatal("mapping depends on snapshot order")
	}

	// Removing i3 moves exactly the keys i3 had.
	b.update(append(append([]discovery.Instance(nil), insts[:3]...), insts[4:]...))
	after := place(b)
	for key, was := range before {
		if now := after[key]; (was == "i3") != (now != was) {
			t.Fatalf("key %s moved %s -> %s", key, was, now)
		}
	}

	// Adding an 11th instance moves about 1/11 of the keys, all of them to the newcomer.
	b.update(append(insts, discovery.Instance{ID: "i10", Address: "10.0.9.9", Port: 8080}))
	grown := place(b)
	moved := 0
	for key, was := range before {
		if now := grown[key]; now != was {
			moved++
			if now != "i10" {
				t.Fatalf("key %s moved %s -> %s, not to the new instance", key, was, now)
			}
		}
	}
	if share := float64(moved) / keys; share < 0.05 || share > 0.14 {
		t.Fatalf("adding 1 of 11 instances moved %.1f%% of keys", share*100)
	}
}

func TestRingHashWithoutKeyIsRandom(t *testing.T) {
	b := mustFixed(t, instances(3), WithPolicy(RingHash), seeded())
	if counts := pickN(t, b, context.Background(), 3000); len(counts) != 3 {
		t.Fatalf("picks without a key went to %v", counts)
	}
}

func TestStateSurvivesUpdates(t *testing.T) {
	insts := instances(3)
	b := mustFixed(t, insts[:2])
	a := b.endpoints["i0"]
	a.inflight.Add(1)
	a.Done(50*time.Millisecond, nil)
	ewma := a.ewma.Load()
	if ewma == 0 {
		t.Fatal("no latency recorded")
	}

	moved := insts[0]
	moved.Tags = []string{"v2"}
	b.update([]discovery.Instance{moved, insts[1], insts[2]}) // i0 stays, with new tags
	if b.endpoints["i0"] != a || a.ewma.Load() != ewma {
		t.Fatal("state of a remaining instance was not kept")
	}
	if got := a.Instance().Tags; len(got) != 1 || got[0] != "v2" {
		t.Fatalf("instance not refreshed: %v", got)
	}

	b.update(insts[1:]) // i0 leaves
	if _, ok := b.endpoints["i0"]; ok || !a.removed {
		t.Fatal("state of a departed instance was kept")
	}
	b.update(insts) // and comes back with a fresh state
	if e := b.endpoints["i0"]; e == a || e.ewma.Load() != 0 {
		t.Fatal("a returning instance inherited old state")
	}

	readdr := insts[1]
	readdr.Port = 9999
	old := b.endpoints["i1"]
	b.update([]discovery.Instance{insts[0], readdr, insts[2]})
	if b.endpoints["i1"] == old {
		t.Fatal("an instance that moved address kept its transport and state")
	}
}

func TestDuplicateAndAnonymousInstances(t *testing.T) {
	b := mustFixed(t, []discovery.Instance{
		{ID: "a", Address: "10.0.0.1", Port: 1},
		{ID: "a", Address: "10.0.0.2", Port: 2},
		{Address: "10.0.0.3", Port: 3},
	}, WithPolicy(RoundRobin))
	counts := pickN(t, b, context.Background(), 4)
	if len(counts) != 2 || counts["a"] != 2 || counts["10.0.0.3:3"] != 2 {
		t.Fatalf("counts %v", counts)
	}
}

func TestNoInstancesErrors(t *testing.T) {
	w := newFakeWatcher()
	b, err := New("svc", w)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, err = b.Pick(context.Background())
	var nie *NoInstancesError
	if !errors.Is(err, ErrNoInstances) || !errors.As(err, &nie) || nie.Reason != "no snapshot yet" || nie.Service != "svc" {
		t.Fatalf("before any snapshot: %v", err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = b.Pick(context.Background()) }); n != 0 {
		t.Fatalf("a failing pick allocates %v", n)
	}
}

func TestAvailability(t *testing.T) {
	for _, p := range []string{P2C, RoundRobin, Random, LeastRequest, RingHash} {
		t.Run(p, func(t *testing.T) {
			var mu sync.Mutex
			down := map[string]bool{"i0": true, "i2": true}
			b := mustFixed(t, instances(4), WithPolicy(p), seeded(), WithAvailability(func(id string) bool {
				mu.Lock()
				defer mu.Unlock()
				return !down[id]
			}))
			ctx := WithHashKey(context.Background(), "k")
			counts := pickN(t, b, ctx, 400)
			if counts["i0"]+counts["i2"] != 0 {
				t.Fatalf("unavailable instances picked: %v", counts)
			}
			mu.Lock()
			down["i1"], down["i3"] = true, true
			mu.Unlock()
			if _, err := b.Pick(ctx); !errors.Is(err, ErrNoInstances) {
				t.Fatalf("all unavailable: %v", err)
			}
		})
	}
}

func TestFollowsWatcher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newFakeWatcher()
		b, err := New("svc", w, WithPolicy(RoundRobin))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err == nil {
			t.Fatal("second Start succeeded")
		}
		select {
		case <-b.Ready():
			t.Fatal("ready before the first snapshot")
		default:
		}
		insts := instances(3)
		w.set(insts[:2]...)
		synctest.Wait()
		<-b.Ready()
		if c := pickN(t, b, context.Background(), 4); len(c) != 2 {
			t.Fatalf("after first snapshot: %v", c)
		}
		w.set(insts...)
		synctest.Wait()
		if c := pickN(t, b, context.Background(), 6); len(c) != 3 {
			t.Fatalf("after second snapshot: %v", c)
		}
		w.set() // an empty service is honoured
		synctest.Wait()
		if _, err := b.Pick(context.Background()); !errors.Is(err, ErrNoInstances) {
			t.Fatalf("empty service: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatal("second Close:", err)
		}
		if err := b.Run(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Run after Close: %v", err)
		}
	})
}

func TestRunStopsAndReportsWatcherFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newFakeWatcher()
		b, _ := New("svc", w)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- b.Run(ctx) }()
		synctest.Wait()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}

		w2 := newFakeWatcher()
		b2, _ := New("svc", w2)
		_ = b2.Start()
		boom := errors.New("boom")
		w2.fail(boom)
		synctest.Wait()
		if err := b2.Close(); !errors.Is(err, boom) {
			t.Fatalf("Close after watcher failure: %v", err)
		}
	})
}

func TestNewValidates(t *testing.T) {
	bad := DefaultOutlier()
	bad.MaxEjectionPercent = 101
	bad.BaseEjectionTime = 0
	_, err := NewFixed("", nil, WithPolicy("nine"), WithDecay(0), WithVirtualNodes(0), WithOutlier(bad))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"empty service", `policy "nine": not registered; known: least_request, p2c, random, ring_hash, round_robin`, "decay", "virtual nodes", "MaxEjectionPercent 101", "BaseEjectionTime"} {
		if !contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := New("svc", nil); err == nil {
		t.Fatal("nil watcher accepted")
	}
	if _, err := NewFixed("svc", nil, WithOutlier(Outlier{})); err != nil {
		t.Fatalf("disabled outlier rejected: %v", err)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestPickDoesNotAllocate(t *testing.T) {
	insts := instances(10)
	insts[0].Weight = 3
	for _, p := range []string{P2C, RoundRobin, Random, LeastRequest, RingHash} {
		b := mustFixed(t, insts, WithPolicy(p))
		ctx := WithHashKey(context.Background(), "key")
		if n := testing.AllocsPerRun(1000, func() {
			e, _ := b.Pick(ctx)
			e.Done(time.Millisecond, nil)
		}); n != 0 {
			t.Errorf("%v: %v allocs per pick", p, n)
		}
	}
}

func TestConcurrentPicksUpdatesAndEjections(t *testing.T) {
	o := DefaultOutlier()
	o.ConsecutiveFailures = 2
	o.BaseEjectionTime = time.Millisecond
	for _, p := range []string{P2C, RoundRobin, Random, LeastRequest, RingHash} {
		t.Run(p, func(t *testing.T) {
			insts := instances(8)
			b := mustFixed(t, insts, WithPolicy(p), WithOutlier(o), WithPerInstanceMetrics())
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for g := range 4 {
				wg.Go(func() {
					ctx := WithHashKey(context.Background(), fmt.Sprint(g))
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						e, err := b.Pick(ctx)
						if err != nil {
							continue
						}
						var callErr error
						if e.key == "i1" || i%7 == 0 {
							callErr = errors.New("refused")
						}
						e.Done(time.Duration(i%5)*time.Millisecond, callErr)
					}
				})
			}
			for i := range 200 {
				b.update(insts[i%3 : 8-i%2])
			}
			close(stop)
			wg.Wait()
			for _, e := range b.order {
				if n := e.inflight.Load(); n != 0 {
					t.Errorf("%s: %d in flight after all calls ended", e.key, n)
				}
			}
		})
	}
}
