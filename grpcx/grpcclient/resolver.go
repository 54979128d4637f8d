package grpcclient

import (
	"context"
	"strconv"
	"sync"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"

	"github.com/cloudchassis/kit/discovery"
)

// scheme is the target scheme of the client's resolver, which is installed per connection
// (grpc.WithResolvers), never registered globally.
const scheme = "cloudchassis"

type (
	clientKey struct{} // resolver.State attribute: the *Client, for the balancer
	idKey     struct{} // resolver.Endpoint attribute: the instance id
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
		for _, inst := range snap.Instances {
			eps = append(eps, resolver.Endpoint{
				Addresses:  []resolver.Address{{Addr: inst.HostPort()}},
				Attributes: attributes.New(idKey{}, instanceKey(inst)),
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
