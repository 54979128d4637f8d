package lb

import (
	"container/heap"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cloudchassis/kit/discovery"
)

// manualClock is a clock the simulation moves.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

type completion struct {
	at  time.Time
	e   *Endpoint
	lat time.Duration
}

type events []completion

func (h events) Len() int           { return len(h) }
func (h events) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h events) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *events) Push(x any)        { *h = append(*h, x.(completion)) }
func (h *events) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// simulate runs a closed loop of `clients` callers for `d` of simulated time: each caller picks an
// instance, the call takes latency(id) ±20%, and the caller picks again when it ends. It returns the
// picks per instance.
func simulate(t *testing.T, b *Balancer, clk *manualClock, clients int, d time.Duration, latency func(id string) time.Duration) map[string]int {
	t.Helper()
	jitter := rand.New(rand.NewPCG(3, 4))
	counts := map[string]int{}
	var q events
	start := clk.Now()
	pick := func(now time.Time) {
		e, err := b.Pick(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		counts[e.key]++
		base := latency(e.key)
		lat := base*8/10 + time.Duration(jitter.Int64N(int64(base)*4/10+1))
		heap.Push(&q, completion{now.Add(lat), e, lat})
	}
	for range clients {
		pick(start)
	}
	for q.Len() > 0 {
		c := heap.Pop(&q).(completion)
		clk.set(c.at)
		c.e.Done(c.lat, nil)
		if c.at.Sub(start) < d {
			pick(c.at)
		}
	}
	return counts
}

func share(counts map[string]int, id string) float64 {
	total := 0
	for _, n := range counts {
		total += n
	}
	return float64(counts[id]) / float64(total)
}

func TestP2CAvoidsSlowInstance(t *testing.T) {
	slow := func(id string) time.Duration {
		if id == "i0" {
			return 100 * time.Millisecond
		}
		return 10 * time.Millisecond
	}
	for _, tc := range []struct {
		n, clients int
		max        float64 // largest acceptable share of the slow instance
	}{
		{3, 6, 0.10},   // fair share 33%
		{10, 20, 0.03}, // fair share 10%
	} {
		clk := &manualClock{now: time.Unix(1e9, 0)}
		b := mustFixed(t, instances(tc.n), seeded(), WithClock(clk.Now))
		got := share(simulate(t, b, clk, tc.clients, 30*time.Second, slow), "i0")
		t.Logf("%d instances, %d callers: the 10x slower instance got %.2f%% of calls", tc.n, tc.clients, got*100)
		if got > tc.max {
			t.Errorf("%d instances: slow instance got %.2f%%, want <= %.0f%%", tc.n, got*100, tc.max*100)
		}

		// Round robin, for contrast, gives it its full share: the simulation can tell them apart.
		clk2 := &manualClock{now: time.Unix(1e9, 0)}
		rr := mustFixed(t, instances(tc.n), WithPolicy(RoundRobin), WithClock(clk2.Now))
		if got := share(simulate(t, rr, clk2, tc.clients, 30*time.Second, slow), "i0"); got < 0.9/float64(tc.n) {
			t.Errorf("round robin gave the slow instance only %.2f%%", got*100)
		}
	}
}

func TestP2CRecoversWhenInstanceHeals(t *testing.T) {
	clk := &manualClock{now: time.Unix(1e9, 0)}
	b := mustFixed(t, instances(3), seeded(), WithClock(clk.Now))
	slow := func(id string) time.Duration {
		if id == "i0" {
			return 100 * time.Millisecond
		}
		return 10 * time.Millisecond
	}
	simulate(t, b, clk, 6, 30*time.Second, slow)
	// i0 heals. Its high estimate decays while it is avoided, it is probed again, and after a few
	// decay periods it is back to a fair share.
	simulate(t, b, clk, 6, 30*time.Second, func(string) time.Duration { return 10 * time.Millisecond })
	got := share(simulate(t, b, clk, 6, 10*time.Second, func(string) time.Duration { return 10 * time.Millisecond }), "i0")
	if got < 0.25 {
		t.Fatalf("healed instance gets %.1f%% of calls, want about 33%%", got*100)
	}
}

func TestP2CNewInstanceIsProbedOnce(t *testing.T) {
	clk := &manualClock{now: time.Unix(1e9, 0)}
	insts := instances(3)
	b := mustFixed(t, insts[:2], seeded(), WithClock(clk.Now))
	simulate(t, b, clk, 4, time.Second, func(string) time.Duration { return 10 * time.Millisecond })
	b.update(insts)
	// The newcomer costs 0 while idle, so it is taken as soon as it is drawn; with one call in flight
	// and no answer yet it costs the penalty and is avoided.
	var held []*Endpoint
	for range 50 {
		e, _ := b.Pick(context.Background())
		held = append(held, e)
	}
	if n := b.endpoints["i2"].inflight.Load(); n != 1 {
		t.Fatalf("new instance has %d calls in flight before answering, want 1", n)
	}
	for _, e := range held {
		e.Release()
	}
}

func TestFailuresRaiseTheLatencyEstimate(t *testing.T) {
	clk := &manualClock{now: time.Unix(1e9, 0)}
	b := mustFixed(t, instances(2), WithClock(clk.Now), WithOutlier(Outlier{}))
	e := b.endpoints["i0"]
	e.inflight.Add(1)
	e.Done(10*time.Millisecond, nil)
	before := e.cost(b.coarse.Load(), b.tau)
	e.inflight.Add(1)
	e.Done(time.Microsecond, errRefused) // a fast failure must not make the instance attractive
	if after := e.cost(b.coarse.Load(), b.tau); after < 2*before {
		t.Fatalf("cost after a fast failure %.0f, before %.0f", after, before)
	}
	e.inflight.Add(1)
	e.Done(time.Microsecond, context.Canceled) // the caller gave up: nothing recorded
	if got := e.inflight.Load(); got != 0 {
		t.Fatalf("in flight %d", got)
	}
}

func TestDecayMatchesExp(t *testing.T) {
	for _, x := range []float64{0, 1e-6, 1e-3, 0.005, 0.00999, 0.01, 0.5, 3, 50} {
		if got, want := decay(x), math.Exp(-x); math.Abs(got-want) > 1e-8 {
			t.Errorf("decay(%v) = %v, want %v", x, got, want)
		}
	}
}

// A call cut short (context.Canceled: a hedge won, the caller gave up) says the instance took at least
// that long: it raises the latency estimate when above it, never lowers it, and never counts
// towards ejection. Otherwise an instance whose slow calls are always hedged would never look slow.
func TestCancelledCallRaisesEstimateOnly(t *testing.T) {
	b, err := NewFixed("svc", []discovery.Instance{{ID: "a", Address: "10.0.0.1", Port: 1}},
		WithOutlier(Outlier{ConsecutiveFailures: 1}))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	e := b.table.Load().Endpoints[0]
	est := func() time.Duration { return time.Duration(math.Float64frombits(e.ewma.Load())) }
	pick := func() *Endpoint {
		p, err := b.Pick(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	pick().Done(2*time.Millisecond, nil)
	if est() != 2*time.Millisecond {
		t.Fatalf("estimate %v after a 2 ms success", est())
	}
	pick().Done(time.Millisecond, context.Canceled) // shorter than the estimate: no evidence
	if est() != 2*time.Millisecond {
		t.Fatalf("a short cancelled call changed the estimate to %v", est())
	}
	pick().Done(50*time.Millisecond, fmt.Errorf("attempt: %w", context.Canceled))
	if est() != 50*time.Millisecond {
		t.Fatalf("estimate %v after a call cancelled at 50 ms, want 50ms", est())
	}
	if e.ejected || e.consecutive != 0 {
		t.Fatalf("a cancelled call counted towards ejection: ejected %v, consecutive %d", e.ejected, e.consecutive)
	}
	if e.inflight.Load() != 0 {
		t.Fatalf("in flight %d after Done", e.inflight.Load())
	}
}
