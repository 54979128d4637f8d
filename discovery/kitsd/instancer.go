package kitsd

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-kit/kit/sd"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/internal/feed"
)

// Instancer adapts a discovery.Watcher to go-kit's sd.Instancer. Instances are reported as
// "address:port" strings, sorted.
//
// It follows go-kit's own conventions: Register sends the current state to the new channel at once (a
// blocking send, as go-kit's cache does, so register a channel that is being received from); an event
// with an error carries no instances, and go-kit's Endpointer then keeps its last endpoints (or drops
// them after the timeout given with sd.InvalidateOnError). Identical states are not sent twice.
//
// An Instancer is safe for concurrent use. Stop ends its goroutine; it does not close the Watcher.
type Instancer struct {
	w      discovery.Watcher
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	state sd.Event
	chans map[chan<- sd.Event]struct{}
}

var _ sd.Instancer = (*Instancer)(nil)

// NewInstancer starts following w. Until w's first snapshot arrives the state is an empty event.
func NewInstancer(w discovery.Watcher) *Instancer {
	ctx, cancel := context.WithCancel(context.Background())
	in := &Instancer{w: w, cancel: cancel, done: make(chan struct{}), chans: map[chan<- sd.Event]struct{}{}}
	go in.run(ctx)
	return in
}

func (in *Instancer) run(ctx context.Context) {
	defer close(in.done)
	var after uint64
	for {
		snap, err := in.w.Next(ctx, after)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// The watcher ended (closed): tell the subscribers, as go-kit instancers do on errors.
			in.update(sd.Event{Err: err})
			return
		}
		after = snap.Version
		in.update(toEvent(snap))
	}
}

func toEvent(s discovery.Snapshot) sd.Event {
	if s.Err != nil {
		return sd.Event{Err: s.Err}
	}
	out := make([]string, len(s.Instances))
	for i, inst := range s.Instances {
		out[i] = inst.HostPort()
	}
	slices.Sort(out)
	return sd.Event{Instances: out}
}

func (in *Instancer) update(ev sd.Event) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if slices.Equal(ev.Instances, in.state.Instances) && errors.Is(ev.Err, in.state.Err) && errors.Is(in.state.Err, ev.Err) {
		return
	}
	in.state = ev
	for ch := range in.chans {
		ch <- copyEvent(ev)
	}
}

func copyEvent(e sd.Event) sd.Event {
	e.Instances = slices.Clone(e.Instances) // receivers may sort or modify their copy
	return e
}

// Register implements sd.Instancer: ch receives the current state at once, then every change.
func (in *Instancer) Register(ch chan<- sd.Event) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.chans[ch] = struct{}{}
	ch <- copyEvent(in.state)
}

// Deregister implements sd.Instancer.
func (in *Instancer) Deregister(ch chan<- sd.Event) {
	in.mu.Lock()
	defer in.mu.Unlock()
	delete(in.chans, ch)
}

// State returns the current event.
func (in *Instancer) State() sd.Event {
	in.mu.Lock()
	defer in.mu.Unlock()
	return copyEvent(in.state)
}

// Stop implements sd.Instancer: it ends the goroutine that follows the Watcher and waits for it.
// Registered channels get no further events. Deregister channels that are no longer read before
// calling Stop (go-kit's Endpointer.Close does), since a pending send is waited for. Stop is idempotent.
func (in *Instancer) Stop() {
	in.once.Do(func() {
		in.cancel()
		<-in.done
	})
}

// Watcher adapts a go-kit sd.Instancer to a discovery.Watcher. Instance strings must be "host:port"
// (go-kit's convention for HTTP and gRPC instancers); the ID is the string itself. Entries that do not
// parse are left out and reported in Snapshot.Err. An error event keeps the last known instances, with
// Err set, like the discovery watchers do.
//
// A Watcher is safe for concurrent use. Close deregisters from the Instancer and ends the goroutine;
// it does not stop the Instancer.
type Watcher struct {
	service      string
	in           sd.Instancer
	ch           chan sd.Event
	deregistered chan struct{}
	done         chan struct{}
	once         sync.Once

	mu     sync.Mutex
	feed   feed.Feed
	closed bool
}

var _ discovery.Watcher = (*Watcher)(nil)

// NewWatcher registers with in and returns a Watcher of its instances, reported as service.
func NewWatcher(service string, in sd.Instancer) *Watcher {
	w := &Watcher{
		service: service, in: in,
		ch:           make(chan sd.Event),
		deregistered: make(chan struct{}),
		done:         make(chan struct{}),
		feed:         feed.Feed{Cur: discovery.Snapshot{Service: service}},
	}
	go w.run()
	in.Register(w.ch) // go-kit instancers send the current state here at once
	return w
}

func (w *Watcher) run() {
	defer close(w.done)
	for {
		select {
		case ev := <-w.ch:
			w.apply(ev)
		case <-w.deregistered:
			return
		}
	}
}

func (w *Watcher) apply(ev sd.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	next := discovery.Snapshot{Service: w.service, Updated: time.Now()}
	if ev.Err != nil {
		next.Instances, next.Updated, next.Err = w.feed.Cur.Instances, w.feed.Cur.Updated, ev.Err
	} else {
		var errs []error
		for _, s := range ev.Instances {
			host, port, err := net.SplitHostPort(s)
			p, perr := strconv.Atoi(port)
			if err != nil || perr != nil || p < 1 || p > 65535 {
				errs = append(errs, errors.New("kitsd: instance "+strconv.Quote(s)+" is not host:port"))
				continue
			}
			next.Instances = append(next.Instances, discovery.Instance{ID: s, Address: host, Port: p})
		}
		slices.SortFunc(next.Instances, func(a, b discovery.Instance) int {
			switch {
			case a.ID < b.ID:
				return -1
			case a.ID > b.ID:
				return 1
			}
			return 0
		})
		next.Err = errors.Join(errs...)
	}
	w.feed.Publish(next)
}

// Next implements discovery.Watcher. It returns discovery.ErrClosed after Close.
func (w *Watcher) Next(ctx context.Context, after uint64) (discovery.Snapshot, error) {
	return feed.Next(ctx, &w.mu, &w.feed, after, nil)
}

// Close deregisters from the Instancer, ends the goroutine and wakes blocked Next calls. It is
// idempotent and returns nil.
func (w *Watcher) Close() error {
	w.once.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.feed.Close()
		w.mu.Unlock()
		// The goroutine keeps receiving while we deregister: go-kit instancers send while holding the
		// lock Deregister takes.
		w.in.Deregister(w.ch)
		close(w.deregistered)
		<-w.done
	})
	return nil
}
