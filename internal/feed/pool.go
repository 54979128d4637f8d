package feed

import (
	"context"
	"sync"
	"time"

	"github.com/cloudchassis/kit/discovery"
)

// Pool runs the shared watch loops of a registry client (discovery/consul's Registry,
// discovery/dns's Resolver): one loop per key however many callers watch it, each caller holding a
// reference-counted Handle; a loop stops when its last Handle is closed, or when the Pool is. A Pool
// is safe for concurrent use; the zero value is ready.
type Pool struct {
	mu     sync.Mutex
	shared map[string]*Shared
	closed bool
}

// Shared is one loop's feed. The loop publishes to Feed with Mu held; Service is the service the
// loop follows, for metrics.
type Shared struct {
	Service string
	Mu      sync.Mutex
	Feed    Feed

	key    string
	refs   int // guarded by Pool.mu
	cancel context.CancelFunc
	done   chan struct{}
}

// Watch returns a Handle on the loop for key. When there is none yet, it makes one whose Feed
// starts with an empty snapshot of service, calls start with it (under the Pool's lock: start must
// not block) and runs the function start returns in a goroutine, until its context is cancelled;
// the Feed is closed once that function returns. After Close, Watch returns discovery.ErrClosed.
func (p *Pool) Watch(key, service string, start func(s *Shared) func(ctx context.Context)) (*Handle, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, discovery.ErrClosed
	}
	s := p.shared[key]
	if s == nil {
		if p.shared == nil {
			p.shared = map[string]*Shared{}
		}
		s = &Shared{Service: service, key: key, done: make(chan struct{}), Feed: Feed{Cur: discovery.Snapshot{Service: service}}}
		p.shared[key] = s
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel = cancel
		run := start(s)
		go func() {
			defer close(s.done)
			defer func() {
				s.Mu.Lock()
				s.Feed.Close()
				s.Mu.Unlock()
			}()
			run(ctx)
		}()
	}
	s.refs++
	return &Handle{p: p, s: s, done: make(chan struct{})}, nil
}

// Close stops every loop and waits for them. Handles then return discovery.ErrClosed. Close is
// idempotent.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	all := make([]*Shared, 0, len(p.shared))
	for _, s := range p.shared {
		all = append(all, s)
	}
	clear(p.shared)
	p.mu.Unlock()
	for _, s := range all {
		s.cancel()
	}
	for _, s := range all {
		<-s.done
	}
}

func (p *Pool) release(s *Shared) {
	p.mu.Lock()
	s.refs--
	last := s.refs == 0
	if last && p.shared[s.key] == s {
		delete(p.shared, s.key)
	}
	p.mu.Unlock()
	if last {
		s.cancel()
		<-s.done
	}
}

// Gauge is what the discovery gauges report for one service.
type Gauge struct {
	// Age is the age in seconds of the list served while the registry fails (Err set), else 0.
	Age float64
	// Instances is the length of the list served.
	Instances int
}

// Gauges returns, per service, the largest age and instance count among the loops that follow it:
// the values of semconv.MetricDiscoverySnapshotAge and MetricDiscoveryInstances.
func (p *Pool) Gauges(now time.Time) map[string]Gauge {
	per := map[string]Gauge{}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.shared {
		s.Mu.Lock()
		g := per[s.Service]
		if s.Feed.Cur.Err != nil && !s.Feed.Cur.Updated.IsZero() {
			g.Age = max(g.Age, now.Sub(s.Feed.Cur.Updated).Seconds())
		}
		g.Instances = max(g.Instances, len(s.Feed.Cur.Instances))
		per[s.Service] = g
		s.Mu.Unlock()
	}
	return per
}

// Handle is one caller's reference on a shared loop: a discovery.Watcher, safe for concurrent use.
type Handle struct {
	p    *Pool
	s    *Shared
	done chan struct{}
	once sync.Once
}

// Next is discovery.Watcher's Next over the loop's Feed.
func (h *Handle) Next(ctx context.Context, after uint64) (discovery.Snapshot, error) {
	return Next(ctx, &h.s.Mu, &h.s.Feed, after, h.done)
}

// Close releases the reference; the loop stops when its last Handle is closed. Blocked and later
// calls to Next return discovery.ErrClosed. Close is idempotent and returns nil.
func (h *Handle) Close() error {
	h.once.Do(func() {
		close(h.done)
		h.p.release(h.s)
	})
	return nil
}
