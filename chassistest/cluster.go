package chassistest

import (
	"net/http"
	"sync"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/discovery/discoverytest"
)

// Cluster is a group of services that find each other through one in-memory registry, with faults
// and partitions on the links between them. Every service started in it registers in the registry
// once ready and deregisters when it drains, so chassis' Client in one finds the others by name.
//
// Services may start in any order: every client a service creates, whenever it creates it, goes
// through the cluster's links (faults, partitions, in-memory calls), and the service's own client
// options (a ring-hash balancer, say) apply on top.
//
// A Cluster belongs to one test; its methods are safe for concurrent use.
type Cluster struct {
	tb       testing.TB
	opts     []Option
	registry *discoverytest.Registry
	baseline goleak.Option

	mu         sync.Mutex
	instances  []*Instance
	byAddr     map[string]*Instance // registered public address -> instance, for in-memory calls
	links      map[[2]string]*Link
	partitions map[[2]string]bool
	noLeak     bool
}

// NewCluster returns an empty cluster whose services stop when the test ends; then, once all have
// stopped, it fails the test if goroutines leaked (see WithoutLeakCheck). opts apply to every service
// started in it.
func NewCluster(tb testing.TB, opts ...Option) *Cluster {
	tb.Helper()
	c := &Cluster{
		tb:         tb,
		opts:       opts,
		registry:   discoverytest.NewRegistry(),
		baseline:   goleak.IgnoreCurrent(),
		byAddr:     map[string]*Instance{},
		links:      map[[2]string]*Link{},
		partitions: map[[2]string]bool{},
	}
	if !newOptions(opts).leakCheck {
		c.noLeak = true
	}
	// Registered first, so it runs after every instance's cleanup.
	tb.Cleanup(c.verifyNoLeaks)
	return c
}

// Registry returns the cluster's registry, to add instances that are not chassis services (an
// httptest.Server, a Proxy in front of a service) or to make discovery fail (Registry.Fail).
func (c *Cluster) Registry() *discoverytest.Registry { return c.registry }

// Start starts a service in the cluster; see the package-level Start.
func (c *Cluster) Start(name string, setup func(*chassis.Service) error, opts ...Option) *Instance {
	c.tb.Helper()
	o := newOptions(c.opts, opts)
	if !o.leakCheck {
		c.mu.Lock()
		c.noLeak = true
		c.mu.Unlock()
	}
	return c.start(name, setup, o)
}

// Instances returns the services started in the cluster under name that have not stopped, in start
// order.
func (c *Cluster) Instances(name string) []*Instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Instance
	for _, in := range c.instances {
		if in.name == name && !in.isStopped() {
			out = append(out, in)
		}
	}
	return out
}

// Link returns the faults of calls from the service named from to the service named to (one way),
// for every instance of either. It exists before either service starts.
func (c *Cluster) Link(from, to string) *Link {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.linkLocked(from, to)
}

func (c *Cluster) linkLocked(from, to string) *Link {
	k := [2]string{from, to}
	l := c.links[k]
	if l == nil {
		l = &Link{}
		c.links[k] = l
	}
	return l
}

// Partition cuts the network between services a and b, both ways: calls between them fail at once
// with an error matching syscall.EHOSTUNREACH, whatever fault their links carry, until Heal. Calls
// from the test itself (Instance.Client) are not affected.
func (c *Cluster) Partition(a, b string) {
	c.tb.Helper()
	c.mu.Lock()
	c.partitions[[2]string{a, b}] = true
	c.partitions[[2]string{b, a}] = true
	c.mu.Unlock()
}

// Heal ends every partition. Link faults stay.
func (c *Cluster) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.partitions)
}

func (c *Cluster) partitioned(from, to string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.partitions[[2]string{from, to}]
}

func (c *Cluster) add(in *Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.instances = append(c.instances, in)
}

func (c *Cluster) setAddr(addr string, in *Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if in == nil {
		delete(c.byAddr, addr)
		return
	}
	c.byAddr[addr] = in
}

// memoryRoute serves calls between services of the cluster in memory: it finds the instance the
// balancer picked by its registered address and calls its handler.
type memoryRoute struct{ c *Cluster }

func (m memoryRoute) RoundTrip(req *http.Request) (*http.Response, error) {
	m.c.mu.Lock()
	in := m.c.byAddr[req.URL.Host]
	m.c.mu.Unlock()
	if in == nil || in.isStopped() {
		closeBody(req)
		return nil, opError("dial", req, syscall.ECONNREFUSED)
	}
	return in.memory.RoundTrip(req)
}

// linkTransport carries the calls of one caller instance to one service: partition, link fault, then
// the caller's transport (loopback sockets, or memory).
type linkTransport struct {
	c        *Cluster
	from, to string
	next     http.RoundTripper
}

func (l *linkTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if l.c.partitioned(l.from, l.to) {
		closeBody(req)
		return nil, opError("dial", req, syscall.EHOSTUNREACH)
	}
	return l.c.Link(l.from, l.to).roundTrip(req, l.next)
}

// Link holds the fault applied to the calls from one service to another in a Cluster.
type Link struct{ faults }

// Set makes f the fault of calls that start from now on; nil lets them through.
func (l *Link) Set(f Fault) { l.set(f) }

// Requests returns how many calls went over the link, faulted or not (partitioned ones excluded).
func (l *Link) Requests() int { return int(l.requests.Load()) }

// verifyNoLeaks runs when the test's cleanups reach the cluster, after its instances stopped.
func (c *Cluster) verifyNoLeaks() {
	c.mu.Lock()
	skip := c.noLeak || len(c.instances) == 0
	c.mu.Unlock()
	if skip || c.tb.Failed() {
		return // a failed test's goroutines say nothing new
	}
	goleak.VerifyNone(c.tb, LeakOptions(c.baseline)...)
}

// LeakOptions are the goleak options chassistest checks with, plus extra: goroutines of idle
// keep-alive connections in some transport's pool (http.DefaultTransport's, say) are not leaks; they
// end when the pool closes them. Pass them to goleak.VerifyTestMain to check a whole package.
func LeakOptions(extra ...goleak.Option) []goleak.Option {
	return append([]goleak.Option{
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	}, extra...)
}
