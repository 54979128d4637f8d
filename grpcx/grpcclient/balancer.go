package grpcclient

import (
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/cloudchassis/kit/discovery"
)

// BalancerName is the name under which the client's gRPC balancer is registered with grpc-go.
//
// grpc-go has no per-connection registry of balancers (grpc.WithResolvers exists for resolvers,
// nothing for balancers), so this package registers its builder once, in init, under a name no
// other policy uses. The builder holds no state: each connection's balancer finds its Client in
// the resolver state that the Client's own resolver (installed per connection) sends it, so a
// connection made by anyone else that names this policy gets no balancer state from us and fails
// its calls with UNAVAILABLE.
const BalancerName = "cloudchassis_kit_lb"

func init() { balancer.Register(builder{}) }

type builder struct{}

func (builder) Name() string { return BalancerName }

func (builder) Build(cc balancer.ClientConn, _ balancer.BuildOptions) balancer.Balancer {
	return &grpcBalancer{cc: cc, subs: map[string]*subConn{}}
}

// grpcBalancer keeps one SubConn (one HTTP/2 connection) per instance of the resolver's state and
// publishes their states to its Client, whose lb.Balancer picks among the connected ones. gRPC
// calls its methods one at a time; mu guards against Close racing a state listener.
type grpcBalancer struct {
	cc balancer.ClientConn

	mu     sync.Mutex
	c      *Client
	subs   map[string]*subConn // by instance id
	closed bool
}

// subConn is one instance's connection and its latest state.
type subConn struct {
	id        string
	addr      string
	sc        balancer.SubConn
	state     atomic.Int32 // connectivity.State
	everReady atomic.Bool
}

func (s *subConn) ready() bool { return connectivity.State(s.state.Load()) == connectivity.Ready }

// usable reports whether the balancer may pick the instance: its connection is READY, or it is
// being made for the first time (a new instance, or the client just started), when an attempt
// waits for it in the picker. An instance whose connection was lost is skipped until it is READY
// again: a dead process would otherwise be picked on every reconnection attempt.
func (s *subConn) usable() bool {
	switch connectivity.State(s.state.Load()) {
	case connectivity.Ready:
		return true
	case connectivity.Idle, connectivity.Connecting:
		return !s.everReady.Load()
	}
	return false
}

// connTable is the immutable view of the connections a Client reads on every call.
type connTable struct {
	byID       map[string]*subConn
	ready      int  // connections READY
	connecting int  // connections IDLE or CONNECTING
	resolved   bool // the resolver has sent a state
}

func (b *grpcBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	c, _ := s.ResolverState.Attributes.Value(clientKey{}).(*Client)
	b.mu.Lock()
	defer b.mu.Unlock()
	if c == nil || b.closed {
		b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.TransientFailure,
			Picker: errPicker{status.Error(codes.Unavailable, "grpcclient: "+BalancerName+" needs the resolver of grpcclient.New")}})
		return balancer.ErrBadResolverState
	}
	b.c = c
	next := make(map[string]*subConn, len(s.ResolverState.Endpoints))
	insts := make([]discovery.Instance, 0, len(s.ResolverState.Endpoints))
	for _, ep := range s.ResolverState.Endpoints {
		inst, _ := ep.Attributes.Value(instKey{}).(*discovery.Instance)
		if inst == nil || len(ep.Addresses) == 0 {
			continue
		}
		id, addr := instanceKey(*inst), ep.Addresses[0].Addr
		if _, dup := next[id]; dup {
			continue
		}
		insts = append(insts, *inst)
		if old := b.subs[id]; old != nil && old.addr == addr {
			next[id] = old
			continue
		}
		sub := &subConn{id: id, addr: addr}
		sub.state.Store(int32(connectivity.Idle))
		sc, err := b.cc.NewSubConn([]resolver.Address{{Addr: addr}}, balancer.NewSubConnOptions{
			StateListener: func(st balancer.SubConnState) { b.update(sub, st) },
		})
		if err != nil {
			continue
		}
		sub.sc = sc
		next[id] = sub
		sc.Connect()
	}
	for id, old := range b.subs {
		if next[id] != old {
			old.sc.Shutdown()
		}
	}
	b.subs = next
	b.publishLocked()
	c.feed.publish(insts) // after the connections exist: the lb.Balancer never picks one unknown here
	if len(next) == 0 {
		return balancer.ErrBadResolverState // gRPC asks the resolver again, with backoff
	}
	return nil
}

func (b *grpcBalancer) update(sub *subConn, st balancer.SubConnState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if st.ConnectivityState == connectivity.Shutdown || b.closed {
		return
	}
	sub.state.Store(int32(st.ConnectivityState))
	if st.ConnectivityState == connectivity.Ready {
		sub.everReady.Store(true)
	}
	if st.ConnectivityState == connectivity.Idle && b.subs[sub.id] == sub {
		sub.sc.Connect() // reconnect after a lost connection or the backoff of a failed one
	}
	b.publishLocked()
}

// publishLocked hands the Client the new connection table and gives gRPC a new picker, so that
// picks waiting for a connection run again.
func (b *grpcBalancer) publishLocked() {
	if b.c == nil {
		return
	}
	t := &connTable{byID: make(map[string]*subConn, len(b.subs)), resolved: true}
	for id, s := range b.subs {
		t.byID[id] = s
		switch connectivity.State(s.state.Load()) {
		case connectivity.Ready:
			t.ready++
		case connectivity.Idle, connectivity.Connecting:
			t.connecting++
		}
	}
	b.c.publish(t)
	state := connectivity.TransientFailure
	switch {
	case t.ready > 0:
		state = connectivity.Ready
	case t.connecting > 0:
		state = connectivity.Connecting
	}
	b.cc.UpdateState(balancer.State{ConnectivityState: state, Picker: &picker{c: b.c, t: t}})
}

func (b *grpcBalancer) ResolverError(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.subs) == 0 && !b.closed {
		b.cc.UpdateState(balancer.State{ConnectivityState: connectivity.TransientFailure,
			Picker: errPicker{status.Errorf(codes.Unavailable, "grpcclient: resolver: %v", err)}})
	}
}

func (b *grpcBalancer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {} // StateListener instead

func (b *grpcBalancer) ExitIdle() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.subs {
		if connectivity.State(s.state.Load()) == connectivity.Idle {
			s.sc.Connect()
		}
	}
}

func (b *grpcBalancer) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for _, s := range b.subs {
		s.sc.Shutdown()
	}
	b.subs = nil
}

// picker serves gRPC's picks. An attempt of a unary call comes with its instance already chosen by
// the Client's policies (the target in its context): the picker returns that instance's
// connection, or fails the attempt as unsent when it is not connected. Any other pick (a stream)
// is made here, by the Client's lb.Balancer, and its outcome fed back through Done.
type picker struct {
	c *Client
	t *connTable
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	if tg, ok := info.Ctx.Value(targetKey{}).(*target); ok {
		s := p.t.byID[tg.id]
		if s != nil && !s.ready() && s.usable() {
			return balancer.PickResult{}, balancer.ErrNoSubConnAvailable // its first connection: wait for it
		}
		if s == nil || !s.ready() {
			tg.unsent = true
			return balancer.PickResult{}, status.Errorf(codes.Unavailable, "grpcclient: instance %s not connected", tg.id)
		}
		return balancer.PickResult{SubConn: s.sc}, nil
	}
	e, err := p.c.bal.Pick(info.Ctx)
	if err != nil {
		if p.t.connecting > 0 {
			return balancer.PickResult{}, balancer.ErrNoSubConnAvailable // wait for a connection
		}
		return balancer.PickResult{}, status.Error(codes.Unavailable, err.Error())
	}
	s := p.t.byID[e.Instance().ID]
	if s == nil {
		s = p.t.byID[e.Instance().HostPort()]
	}
	if s == nil || !s.ready() {
		e.Release()
		return balancer.PickResult{}, balancer.ErrNoSubConnAvailable
	}
	start := time.Now()
	return balancer.PickResult{SubConn: s.sc, Done: func(d balancer.DoneInfo) {
		err := d.Err
		if err != nil {
			if code := status.Code(err); int(code) < len(p.c.classes) {
				err = &classedError{err: err, class: p.c.classes[code]}
			}
		}
		e.Done(time.Since(start), err)
	}}, nil
}

// errPicker fails every pick with err.
type errPicker struct{ err error }

func (p errPicker) Pick(balancer.PickInfo) (balancer.PickResult, error) {
	return balancer.PickResult{}, p.err
}
