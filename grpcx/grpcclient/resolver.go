package grpcclient

import (
	"context"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"

	"github.com/cloudchassis/kit/discovery"
)

// scheme is the target scheme of the client's resolver, which is installed per connection
// (grpc.WithResolvers), never registered globally.
const scheme = "cloudchassis"

type (
	clientKey struct{} // resolver.State attribute: the *Client, for the balancer
	instKey   struct{} // resolver.Endpoint attribute: the *discovery.Instance
)

type resolverBuilder struct{ c *Client }

func (b *resolverBuilder) Scheme() string { return scheme }

// Build starts following the Client's watcher: every snapshot becomes the connection's list of
// endpoints. A snapshot that the watcher keeps serving while the registry is unreachable (its Err
// set, the last known good list) is applied like any other.
func (b *resolverBuilder) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	ctx, cancel := context.WithCancel(context.Background())
	r := &watchResolver{cancel: cancel}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.follow(ctx, b.c, cc)
	}()
	return r, nil
}

// watchResolver owns one goroutine, which Close stops and waits for.
type watchResolver struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (r *watchResolver) follow(ctx context.Context, c *Client, cc resolver.ClientConn) {
	attrs := attributes.New(clientKey{}, c)
	var after uint64
	for {
		snap, err := c.w.Next(ctx, after)
		if err != nil {
			if ctx.Err() == nil {
				cc.ReportError(err)
			}
			return
		}
		after = snap.Version
		eps := make([]resolver.Endpoint, 0, len(snap.Instances))
		for i := range snap.Instances {
			inst := &snap.Instances[i] // a pointer: attributes compare values with ==
			eps = append(eps, resolver.Endpoint{
				Addresses:  []resolver.Address{{Addr: inst.HostPort()}},
				Attributes: attributes.New(instKey{}, inst),
			})
		}
		_ = cc.UpdateState(resolver.State{Endpoints: eps, Attributes: attrs}) // an empty list is reported by the balancer
	}
}

func (r *watchResolver) ResolveNow(resolver.ResolveNowOptions) {} // the watch is pushed, never polled

func (r *watchResolver) Close() {
	r.cancel()
	r.wg.Wait()
}

// feed is the watcher of the Client's lb.Balancer: the gRPC balancer publishes to it the instances
// it holds connections for, after updating its connection table, so that the lb.Balancer never
// knows an instance before its connection exists. It also tells the Client which version the
// lb.Balancer applied: the lb.Balancer asks for the next one only once it did.
type feed struct {
	service string
	onApply func() // called when the lb.Balancer applied a version

	mu      sync.Mutex
	snap    discovery.Snapshot
	changed chan struct{}
	applied uint64
}

func newFeed(service string, onApply func()) *feed {
	return &feed{service: service, onApply: onApply, changed: make(chan struct{}),
		snap: discovery.Snapshot{Service: service}}
}

func (f *feed) publish(insts []discovery.Instance) {
	f.mu.Lock()
	f.snap = discovery.Snapshot{Service: f.service, Instances: insts, Version: f.snap.Version + 1, Updated: time.Now()}
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// current reports whether the lb.Balancer has applied every published version.
func (f *feed) current() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied >= f.snap.Version
}

func (f *feed) Next(ctx context.Context, after uint64) (discovery.Snapshot, error) {
	f.mu.Lock()
	advanced := after > f.applied
	if advanced {
		f.applied = after
	}
	f.mu.Unlock()
	if advanced {
		f.onApply()
	}
	for {
		f.mu.Lock()
		snap, ch := f.snap, f.changed
		f.mu.Unlock()
		if snap.Version > after {
			return snap, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return discovery.Snapshot{}, ctx.Err()
		}
	}
}

// portWatcher gives every instance its gRPC port: port when set, else the MetaPort metadata, else
// the instance's own port. The balancer and the resolver read the same instances through it, so
// that they agree on ids and addresses.
type portWatcher struct {
	w    discovery.Watcher
	port int
}

func (p portWatcher) Next(ctx context.Context, after uint64) (discovery.Snapshot, error) {
	snap, err := p.w.Next(ctx, after)
	if err != nil {
		return snap, err
	}
	insts := make([]discovery.Instance, len(snap.Instances))
	for i, inst := range snap.Instances {
		if inst.ID == "" {
			inst.ID = inst.HostPort() // keep the id of the registered address
		}
		switch {
		case p.port > 0:
			inst.Port = p.port
		case inst.Meta[MetaPort] != "":
			if n, err := strconv.Atoi(inst.Meta[MetaPort]); err == nil && n > 0 && n < 65536 {
				inst.Port = n
			}
		}
		insts[i] = inst
	}
	snap.Instances = insts
	return snap, nil
}
