package dns_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/dns"
	"github.com/cloudchassis/kit/discovery/dns/dnstest"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

func newResolver(t *testing.T, opts ...dns.Option) *dns.Resolver {
	t.Helper()
	r, err := dns.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func watch(t *testing.T, r *dns.Resolver, name string, opts ...dns.WatchOption) *dns.Watcher {
	t.Helper()
	w, err := r.Watch(name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

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

// until waits for a snapshot that satisfies ok and returns it.
func until(t *testing.T, w discovery.Watcher, after uint64, ok func(discovery.Snapshot) bool) discovery.Snapshot {
	t.Helper()
	for {
		s := next(t, w, after)
		if ok(s) {
			return s
		}
		after = s.Version
	}
}

func ids(s discovery.Snapshot) []string {
	out := make([]string, len(s.Instances))
	for i, in := range s.Instances {
		out[i] = in.ID
	}
	return out
}

var (
	ip1 = netip.MustParseAddr("10.0.0.1")
	ip2 = netip.MustParseAddr("10.0.0.2")
	ip3 = netip.MustParseAddr("10.0.0.3")
	ip6 = netip.MustParseAddr("fd00::1")
)

func TestSRVOverLoopback(t *testing.T) {
	srv := dnstest.New(t)
	srv.SetSRV("orders.service.consul", 0,
		dnstest.SRV{Target: "a.node.consul", Port: 8080, Weight: 1},
		dnstest.SRV{Target: "b.node.consul", Port: 8081, Weight: 3},
		dnstest.SRV{Target: "backup.node.consul", Port: 9000, Priority: 10, Weight: 1})
	srv.SetAddrs("a.node.consul", 0, ip1)
	srv.SetAddrs("b.node.consul", 0, ip2, ip6)
	srv.SetAddrs("backup.node.consul", 0, ip3)
	r := newResolver(t, dns.WithServers(srv.Addr()), dns.WithRefresh(10*time.Millisecond, time.Second))
	w := watch(t, r, "orders.service.consul", dns.WithService("orders"))

	s := next(t, w, 0)
	if s.Err != nil || s.Service != "orders" {
		t.Fatalf("first snapshot: %+v", s)
	}
	// The backup target (priority 10) is left out while priority 0 has targets; b has two addresses.
	if got, want := ids(s), []string{"10.0.0.1:8080", "10.0.0.2:8081", "[fd00::1]:8081"}; !slices.Equal(got, want) {
		t.Fatalf("instances = %v, want %v", got, want)
	}
	if s.Instances[1].Weight != 3 || s.Instances[1].Address != "10.0.0.2" || s.Instances[1].Port != 8081 {
		t.Fatalf("instance = %+v", s.Instances[1])
	}

	// A departure is seen at the next refresh (TTL 0: the floor).
	srv.SetSRV("orders.service.consul", 0, dnstest.SRV{Target: "a.node.consul", Port: 8080, Weight: 1})
	s = until(t, w, s.Version, func(s discovery.Snapshot) bool { return len(s.Instances) == 1 })
	if s.Err != nil || s.Instances[0].ID != "10.0.0.1:8080" {
		t.Fatalf("after departure: %+v", s)
	}
	// Every instance gone: NXDOMAIN is an empty list, not an error.
	srv.Remove("orders.service.consul")
	s = next(t, w, s.Version)
	if s.Err != nil || len(s.Instances) != 0 {
		t.Fatalf("after NXDOMAIN: %+v; want empty without error", s)
	}
	// A name that exists without SRV records is empty too.
	srv.SetSRV("orders.service.consul", 0)
	srv.SetSRV("orders.service.consul", 0, dnstest.SRV{Target: "a.node.consul", Port: 8080})
	s = next(t, w, s.Version)
	if got := ids(s); !slices.Equal(got, []string{"10.0.0.1:8080"}) {
		t.Fatalf("after return: %v", got)
	}
}

func TestSRVWithoutAdditionalAsksForTheTargets(t *testing.T) {
	srv := dnstest.New(t)
	srv.SetAdditional(false)
	srv.SetSRV("_http._tcp.orders.default.svc.cluster.local", 5,
		dnstest.SRV{Target: "10-0-0-1.orders.default.svc.cluster.local", Port: 8080, Weight: 50},
		dnstest.SRV{Target: "10-0-0-2.orders.default.svc.cluster.local", Port: 8080, Weight: 50})
	srv.SetAddrs("10-0-0-1.orders.default.svc.cluster.local", 5, ip1)
	srv.SetAddrs("10-0-0-2.orders.default.svc.cluster.local", 5, ip2)
	r := newResolver(t, dns.WithServers(srv.Addr()))
	w := watch(t, r, "_http._tcp.orders.default.svc.cluster.local")
	s := next(t, w, 0)
	if got, want := ids(s), []string{"10.0.0.1:8080", "10.0.0.2:8080"}; s.Err != nil || !slices.Equal(got, want) {
		t.Fatalf("snapshot = %v (err %v), want %v", got, s.Err, want)
	}
	if s.Service != "_http._tcp.orders.default.svc.cluster.local" {
		t.Fatalf("service defaults to the name: %q", s.Service)
	}
	// One SRV question and an A and an AAAA question per target.
	if n := srv.Queries(""); n != 5 {
		t.Fatalf("queries = %d, want 5", n)
	}
}

func TestAddressesWithPort(t *testing.T) {
	srv := dnstest.New(t)
	srv.SetAddrs("orders.internal", 30, ip2, ip1, ip6)
	r := newResolver(t, dns.WithServers(srv.Addr()))
	w := watch(t, r, "orders.internal.", dns.WithPort(9000))
	s := next(t, w, 0)
	if got, want := ids(s), []string{"10.0.0.1:9000", "10.0.0.2:9000", "[fd00::1]:9000"}; s.Err != nil || !slices.Equal(got, want) {
		t.Fatalf("snapshot = %v (err %v), want %v", got, s.Err, want)
	}
}

func TestTruncatedAnswerIsAskedAgainOverTCP(t *testing.T) {
	srv := dnstest.New(t)
	var targets []dnstest.SRV
	for i := range 40 {
		name := "n" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ".node.consul"
		targets = append(targets, dnstest.SRV{Target: name, Port: uint16(8000 + i), Weight: 1})
		srv.SetAddrs(name, 0, netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)}))
	}
	srv.SetSRV("big.service.consul", 0, targets...)
	srv.SetMaxUDP(512)
	r := newResolver(t, dns.WithServers(srv.Addr()))
	w := watch(t, r, "big.service.consul")
	s := next(t, w, 0)
	if s.Err != nil || len(s.Instances) != 40 {
		t.Fatalf("got %d instances (err %v), want 40", len(s.Instances), s.Err)
	}
	if srv.Queries("udp") != 1 || srv.Queries("tcp") != 1 {
		t.Fatalf("udp %d, tcp %d queries; want 1 truncated UDP answer and 1 over TCP", srv.Queries("udp"), srv.Queries("tcp"))
	}
}

// Consul's DNS, by default, cuts an answer that does not fit the advertised buffer without setting
// TC: an answer that fills the buffer is asked again over TCP, or the watch would publish a
// different subset of the instances on every refresh.
func TestSilentlyCutAnswerIsAskedAgainOverTCP(t *testing.T) {
	srv := dnstest.New(t)
	var targets []dnstest.SRV
	for i := range 60 {
		name := "n" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ".node.consul"
		targets = append(targets, dnstest.SRV{Target: name, Port: uint16(8000 + i), Weight: 1})
		srv.SetAddrs(name, 0, netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)}))
	}
	srv.SetSRV("big.service.consul", 0, targets...)
	srv.SetMaxUDP(dns.DefaultUDPSize)
	srv.SetSilentTruncation(true)
	r := newResolver(t, dns.WithServers(srv.Addr()))
	s := next(t, watch(t, r, "big.service.consul"), 0)
	if s.Err != nil || len(s.Instances) != 60 {
		t.Fatalf("got %d instances (err %v), want 60", len(s.Instances), s.Err)
	}
	if srv.Queries("tcp") != 1 {
		t.Fatalf("%d queries over TCP, want 1 after the full UDP answer", srv.Queries("tcp"))
	}
}

func TestSecondServerAnswersWhenTheFirstFails(t *testing.T) {
	bad, good := dnstest.New(t), dnstest.New(t)
	bad.Fail(dnsmessage.RCodeRefused)
	good.SetAddrs("x.test", 1, ip1)
	r := newResolver(t, dns.WithServers(bad.Addr(), good.Addr()))
	s := next(t, watch(t, r, "x.test", dns.WithPort(80)), 0)
	if s.Err != nil || !slices.Equal(ids(s), []string{"10.0.0.1:80"}) {
		t.Fatalf("%+v", s)
	}
}

// inMemory returns a resolver whose queries go to srv through memory, for synctest bubbles.
func inMemory(t *testing.T, srv *dnstest.Server, opts ...dns.Option) *dns.Resolver {
	return newResolver(t, append([]dns.Option{dns.WithServers("192.0.2.53:53"), dns.WithDialer(srv.Dial)}, opts...)...)
}

func TestRefreshFollowsTTLBetweenFloorAndCeiling(t *testing.T) {
	for _, tc := range []struct {
		ttl  uint32
		want time.Duration
	}{{0, 2 * time.Second}, {5, 5 * time.Second}, {3600, 20 * time.Second}} {
		synctest.Test(t, func(t *testing.T) {
			srv := &dnstest.Server{}
			srv.SetSRV("s.service.consul", tc.ttl, dnstest.SRV{Target: "a.node.consul", Port: 1})
			srv.SetAddrs("a.node.consul", 3600, ip1)
			r := inMemory(t, srv, dns.WithRefresh(2*time.Second, 20*time.Second))
			w := watch(t, r, "s.service.consul")
			next(t, w, 0)
			synctest.Wait()
			if n := srv.Queries("udp"); n != 1 {
				t.Fatalf("TTL %d: %d queries at start, want 1", tc.ttl, n)
			}
			time.Sleep(tc.want - time.Millisecond)
			synctest.Wait()
			if n := srv.Queries("udp"); n != 1 {
				t.Fatalf("TTL %d: refreshed before %v", tc.ttl, tc.want)
			}
			time.Sleep(time.Millisecond)
			synctest.Wait()
			if n := srv.Queries("udp"); n != 2 {
				t.Fatalf("TTL %d: %d queries at %v, want 2", tc.ttl, n, tc.want)
			}
		})
	}
}

func TestNegativeAnswerTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &dnstest.Server{}
		srv.SetNegativeTTL(7)
		r := inMemory(t, srv, dns.WithRefresh(time.Second, time.Minute))
		w := watch(t, r, "gone.service.consul")
		if s := next(t, w, 0); s.Err != nil || len(s.Instances) != 0 {
			t.Fatalf("%+v", s)
		}
		time.Sleep(7*time.Second - time.Millisecond)
		synctest.Wait()
		if n := srv.Queries(""); n != 1 {
			t.Fatalf("asked again before the SOA's negative TTL: %d queries", n)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if n := srv.Queries(""); n != 2 {
			t.Fatalf("%d queries after the negative TTL, want 2", n)
		}
	})
}

func TestOutageKeepsLastKnownListWithItsAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &dnstest.Server{}
		srv.SetSRV("s.service.consul", 0, dnstest.SRV{Target: "a.node.consul", Port: 1})
		srv.SetAddrs("a.node.consul", 0, ip1)
		mr := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(mr))
		r := inMemory(t, srv, dns.WithRefresh(time.Second, time.Minute), dns.WithBackoff(time.Second, 4*time.Second),
			dns.WithTimeout(500*time.Millisecond), dns.WithMeterProvider(mp))
		w := watch(t, r, "s.service.consul", dns.WithService("s"))
		s := next(t, w, 0)
		confirmed := time.Now()
		time.Sleep(time.Second) // one more successful refresh moves Updated without a new version
		synctest.Wait()
		confirmed = confirmed.Add(time.Second)

		srv.Fail(dnsmessage.RCodeServerFailure)
		s = next(t, w, s.Version)
		if !errors.Is(s.Err, dns.ErrServer) || !slices.Equal(ids(s), []string{"10.0.0.1:1"}) || !s.Updated.Equal(confirmed) {
			t.Fatalf("during SERVFAIL: %+v (confirmed %v); want the last list, Err wrapping ErrServer, Updated at the last success", s, confirmed)
		}
		srv.Fail(dnsmessage.RCodeSuccess)
		srv.Drop(true) // now the server does not answer at all: timeouts
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if got := gauge(t, mr, semconv.MetricDiscoverySnapshotAge); got < 29 {
			t.Fatalf("snapshot age = %v s, want about 30", got)
		}
		if got := counter(t, mr, semconv.MetricDiscoveryErrors, attribute.String(semconv.AttrErrorType, "timeout")); got < 3 {
			t.Fatalf("timeout errors = %d", got)
		}
		// Backoff: at most one refresh per second on average over 30 s of failures (each waits up to 4 s).
		if n := srv.Queries(""); n > 2+30 {
			t.Fatalf("%d queries during 30 s of outage: not backing off", n)
		}
		cur := next(t, w, 0)
		if cur.Version != s.Version || cur.Err == nil || len(cur.Instances) != 1 {
			t.Fatalf("an ongoing outage made a new version: %+v", cur)
		}
		srv.Drop(false)
		s = next(t, w, s.Version)
		if s.Err != nil || len(s.Instances) != 1 {
			t.Fatalf("after recovery: %+v", s)
		}
		if got := gauge(t, mr, semconv.MetricDiscoverySnapshotAge); got != 0 {
			t.Fatalf("snapshot age after recovery = %v", got)
		}
		if got := gauge(t, mr, semconv.MetricDiscoveryInstances); got != 1 {
			t.Fatalf("instances gauge = %v", got)
		}
	})
}

func TestMaxStalenessDropsTheList(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &dnstest.Server{}
		srv.SetAddrs("s.test", 0, ip1)
		r := inMemory(t, srv, dns.WithMaxStaleness(10*time.Second), dns.WithBackoff(time.Second, time.Second))
		w := watch(t, r, "s.test", dns.WithPort(80))
		s := next(t, w, 0)
		srv.Fail(dnsmessage.RCodeRefused)
		s = until(t, w, s.Version, func(s discovery.Snapshot) bool { return len(s.Instances) == 0 })
		if !errors.Is(s.Err, discovery.ErrStale) || !errors.Is(s.Err, dns.ErrServer) {
			t.Fatalf("dropped snapshot: %+v", s)
		}
		time.Sleep(5 * time.Second)
		if cur := next(t, w, 0); !errors.Is(cur.Err, discovery.ErrStale) {
			t.Fatalf("later failures forgot the drop: %v", cur.Err)
		}
		srv.Fail(dnsmessage.RCodeSuccess)
		if s = next(t, w, s.Version); s.Err != nil || len(s.Instances) != 1 {
			t.Fatalf("after recovery: %+v", s)
		}
	})
}

func TestFailedFirstRefreshPublishes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &dnstest.Server{}
		srv.Fail(dnsmessage.RCodeServerFailure)
		r := inMemory(t, srv)
		s := next(t, watch(t, r, "s.test"), 0)
		if s.Version != 1 || s.Err == nil || len(s.Instances) != 0 {
			t.Fatalf("%+v", s)
		}
	})
}

func TestOneLoopPerNameSharedAndReferenceCounted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &dnstest.Server{}
		srv.SetAddrs("s.test", 0, ip1)
		r := inMemory(t, srv)
		w1 := watch(t, r, "s.test", dns.WithPort(80))
		w2 := watch(t, r, "S.test.", dns.WithPort(80))
		next(t, w1, 0)
		next(t, w2, 0)
		time.Sleep(10*time.Second - time.Millisecond)
		synctest.Wait()
		// 10 refreshes of A and AAAA by one loop, not two.
		if n := srv.Queries(""); n != 20 {
			t.Fatalf("%d queries, want 20 (one loop)", n)
		}
		_ = w1.Close()
		if _, err := w1.Next(t.Context(), 0); !errors.Is(err, discovery.ErrClosed) {
			t.Fatalf("Next after Close: %v", err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n := srv.Queries(""); n != 22 {
			t.Fatalf("the loop stopped while a watcher remained: %d queries", n)
		}
		_ = w2.Close()
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := srv.Queries(""); n != 22 {
			t.Fatalf("the loop kept running after its last watcher closed: %d queries", n)
		}
		// A new watch after Close of the resolver fails; blocked Next returns ErrClosed.
		w3 := watch(t, r, "other.test", dns.WithPort(80))
		done := make(chan error, 1)
		go func() { _, err := w3.Next(t.Context(), 1); done <- err }()
		synctest.Wait()
		_ = r.Close()
		if err := <-done; !errors.Is(err, discovery.ErrClosed) {
			t.Fatalf("blocked Next after Resolver.Close: %v", err)
		}
		if _, err := r.Watch("s.test"); !errors.Is(err, discovery.ErrClosed) {
			t.Fatalf("Watch after Close: %v", err)
		}
	})
}

func TestWatchRejectsBadInput(t *testing.T) {
	r := newResolver(t, dns.WithServers("127.0.0.1:53"))
	for _, name := range []string{"", ".", "a..b"} {
		if _, err := r.Watch(name); err == nil {
			t.Errorf("Watch(%q) accepted", name)
		}
	}
	if _, err := r.Watch("a.test", dns.WithPort(70000)); err == nil {
		t.Error("port 70000 accepted")
	}
	if _, err := dns.New(dns.WithServers("127.0.0.1")); err == nil {
		t.Error("server without a port accepted")
	}
}

func gauge(t *testing.T, mr *sdkmetric.ManualReader, name string) float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := mr.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Gauge[float64]:
				return d.DataPoints[0].Value
			case metricdata.Gauge[int64]:
				return float64(d.DataPoints[0].Value)
			}
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}

func counter(t *testing.T, mr *sdkmetric.ManualReader, name string, attr attribute.KeyValue) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := mr.Collect(t.Context(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == name {
				for _, dp := range s.DataPoints {
					if v, ok := dp.Attributes.Value(attr.Key); ok && v == attr.Value {
						n += dp.Value
					}
				}
			}
		}
	}
	return n
}
