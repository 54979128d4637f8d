package bench

// Balancer benchmarks: the cost of one pick (plus its completion report) for each Chassis policy,
// beside go-kit's sd/lb round robin, go-zero's P2C (zrpc's gRPC picker) and Kratos' P2C selector;
// and the caller's p50/p99 latency with one 10x slower instance among N, P2C against round robin.
//
//	cd bench && go test -run '^$' -bench LB -benchmem -count 6

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	kitlb "github.com/go-kit/kit/sd/lb"
	"github.com/go-kratos/kratos/v2/registry"
	"github.com/go-kratos/kratos/v2/selector"
	kratosp2c "github.com/go-kratos/kratos/v2/selector/p2c"
	"github.com/zeromicro/go-zero/core/logx"
	_ "github.com/zeromicro/go-zero/zrpc" // registers go-zero's "p2c_ewma" gRPC balancer
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
)

var sizes = []int{10, 100}

func lbInstances(n int) []discovery.Instance {
	out := make([]discovery.Instance, n)
	for i := range out {
		out[i] = discovery.Instance{ID: fmt.Sprintf("i%d", i), Address: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), Port: 8080}
	}
	return out
}

// run measures op serially and with RunParallel (GOMAXPROCS goroutines).
func run(b *testing.B, op func()) {
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			op()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				op()
			}
		})
	})
}

// BenchmarkLBPick is one pick and its release (the ≤ 50 ns, 0 allocs budget), and one pick with a
// completion report carrying a latency (what a real call costs the balancer: the report reads the
// clock once).
func BenchmarkLBPick(b *testing.B) {
	for _, p := range []string{lb.P2C, lb.RoundRobin, lb.Random, lb.LeastRequest, lb.RingHash} {
		for _, n := range sizes {
			bal, err := lb.NewFixed("svc", lbInstances(n), lb.WithPolicy(p))
			if err != nil {
				b.Fatal(err)
			}
			ctx := lb.WithHashKey(context.Background(), "user-42")
			b.Run(fmt.Sprintf("chassis/%v/n=%d/pick", p, n), func(b *testing.B) {
				run(b, func() {
					e, err := bal.Pick(ctx)
					if err != nil {
						b.Fatal(err)
					}
					e.Release()
				})
			})
			b.Run(fmt.Sprintf("chassis/%v/n=%d/pick+done", p, n), func(b *testing.B) {
				run(b, func() {
					e, err := bal.Pick(ctx)
					if err != nil {
						b.Fatal(err)
					}
					e.Done(time.Millisecond, nil)
				})
			})
			_ = bal.Close()
		}
	}
}

// BenchmarkLBPeers measures the peers' equivalents: go-kit's round robin (Endpoint() only: it keeps no
// load state and has nothing to report), go-zero's P2C picker (Pick and the Done callback), Kratos' P2C
// selector (Select and the done callback).
func BenchmarkLBPeers(b *testing.B) {
	for _, n := range sizes {
		insts := lbInstances(n)

		eps := make(sd.FixedEndpointer, n)
		for i := range eps {
			eps[i] = endpoint.Nop
		}
		rr := kitlb.NewRoundRobin(eps)
		b.Run(fmt.Sprintf("gokit/round_robin/n=%d/pick", n), func(b *testing.B) {
			run(b, func() {
				if _, err := rr.Endpoint(); err != nil {
					b.Fatal(err)
				}
			})
		})

		picker := goZeroPicker(b, insts)
		b.Run(fmt.Sprintf("gozero/p2c/n=%d/pick+done", n), func(b *testing.B) {
			run(b, func() {
				res, err := picker.Pick(balancer.PickInfo{FullMethodName: "/svc/M", Ctx: context.Background()})
				if err != nil {
					b.Fatal(err)
				}
				res.Done(balancer.DoneInfo{})
			})
		})

		sel := kratosp2c.New()
		nodes := make([]selector.Node, n)
		for i, in := range insts {
			nodes[i] = selector.NewNode("http", in.HostPort(), &registry.ServiceInstance{ID: in.ID, Name: "svc"})
		}
		sel.Apply(nodes)
		b.Run(fmt.Sprintf("kratos/p2c/n=%d/pick+done", n), func(b *testing.B) {
			ctx := context.Background()
			run(b, func() {
				_, done, err := sel.Select(ctx)
				if err != nil {
					b.Fatal(err)
				}
				done(ctx, selector.DoneInfo{})
			})
		})
	}
}

// goZeroPicker drives go-zero's registered "p2c_ewma" gRPC balancer with a fake ClientConn whose
// SubConns report Ready at once, and returns the picker it publishes. go-zero's picker is internal
// to its module; the gRPC balancer interface is the only way to reach it from outside.
func goZeroPicker(b *testing.B, insts []discovery.Instance) balancer.Picker {
	logx.Disable() // go-zero's picker logs statistics every minute
	builder := balancer.Get("p2c_ewma")
	if builder == nil {
		b.Fatal("go-zero's p2c_ewma balancer is not registered")
	}
	cc := &fakeClientConn{}
	bal := builder.Build(cc, balancer.BuildOptions{})
	addrs := make([]resolver.Address, len(insts))
	for i, in := range insts {
		addrs[i] = resolver.Address{Addr: in.HostPort()}
	}
	if err := bal.UpdateClientConnState(balancer.ClientConnState{ResolverState: resolver.State{Addresses: addrs}}); err != nil {
		b.Fatal(err)
	}
	for _, l := range cc.listeners {
		l(balancer.SubConnState{ConnectivityState: connectivity.Ready})
	}
	if cc.picker == nil {
		b.Fatal("go-zero published no picker")
	}
	return cc.picker
}

type fakeClientConn struct {
	balancer.ClientConn // unimplemented methods panic; the base balancer uses only those below
	listeners           []func(balancer.SubConnState)
	picker              balancer.Picker
}

func (c *fakeClientConn) NewSubConn(_ []resolver.Address, o balancer.NewSubConnOptions) (balancer.SubConn, error) {
	c.listeners = append(c.listeners, o.StateListener)
	return &fakeSubConn{}, nil
}

func (c *fakeClientConn) UpdateState(s balancer.State) { c.picker = s.Picker }

func (c *fakeClientConn) ResolveNow(resolver.ResolveNowOptions) {}

type fakeSubConn struct{ balancer.SubConn }

func (*fakeSubConn) Connect()  {}
func (*fakeSubConn) Shutdown() {}

// BenchmarkLBTail simulates callers against N instances, one of them 10x slower (100 ms against
// 10 ms, ±20% uniform jitter), with 2N closed-loop callers, for 20 s of simulated time on a manual
// clock. It reports the callers' p50 and p99 latency and the slow instance's share of calls. The
// balancer code is the real one; only time and the network are simulated, so the figures are exact
// and repeatable (one op is one whole simulation).
func BenchmarkLBTail(b *testing.B) {
	for _, n := range []int{3, 10} {
		for _, p := range []string{lb.P2C, lb.LeastRequest, lb.RoundRobin} {
			b.Run(fmt.Sprintf("%v/n=%d", p, n), func(b *testing.B) {
				var r tailResult
				for b.Loop() {
					r = simulateTail(b, p, n)
				}
				b.ReportMetric(r.p50.Seconds()*1000, "p50-ms")
				b.ReportMetric(r.p99.Seconds()*1000, "p99-ms")
				b.ReportMetric(r.slowShare*100, "slow-%")
			})
		}
	}
}

type tailResult struct {
	p50, p99  time.Duration
	slowShare float64
}

type simClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *simClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

type simCall struct {
	at  time.Time
	e   *lb.Endpoint
	lat time.Duration
}

type simQueue []simCall

func (q simQueue) Len() int           { return len(q) }
func (q simQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q simQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *simQueue) Push(x any)        { *q = append(*q, x.(simCall)) }
func (q *simQueue) Pop() any          { o := *q; x := o[len(o)-1]; *q = o[:len(o)-1]; return x }

func simulateTail(b *testing.B, p string, n int) tailResult {
	clk := &simClock{now: time.Unix(1e9, 0)}
	bal, err := lb.NewFixed("svc", lbInstances(n), lb.WithPolicy(p), lb.WithClock(clk.Now),
		lb.WithRandSource(rand.NewPCG(1, 2)))
	if err != nil {
		b.Fatal(err)
	}
	defer bal.Close()
	jitter := rand.New(rand.NewPCG(3, 4))
	start := clk.now
	var q simQueue
	var lats []time.Duration
	slow := 0
	pick := func(now time.Time) {
		e, err := bal.Pick(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		base := 10 * time.Millisecond
		if e.Instance().ID == "i0" {
			base *= 10
			slow++
		}
		lat := base*8/10 + time.Duration(jitter.Int64N(int64(base)*4/10+1))
		heap.Push(&q, simCall{now.Add(lat), e, lat})
	}
	for range 2 * n {
		pick(start)
	}
	for q.Len() > 0 {
		c := heap.Pop(&q).(simCall)
		clk.mu.Lock()
		clk.now = c.at
		clk.mu.Unlock()
		c.e.Done(c.lat, nil)
		lats = append(lats, c.lat)
		if c.at.Sub(start) < 20*time.Second {
			pick(c.at)
		}
	}
	slices.Sort(lats)
	return tailResult{
		p50:       lats[len(lats)*50/100],
		p99:       lats[len(lats)*99/100],
		slowShare: float64(slow) / float64(len(lats)),
	}
}
