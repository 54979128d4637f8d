package discoverytest

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/internal/feed"
)

// Registry is an in-memory service registry for tests: Watcher and Registrar fakes over one shared
// state, with fault injection. Changes made through it are seen at once by every Watcher of the service.
//
// The zero value is not usable; use NewRegistry. A Registry is safe for concurrent use and starts no
// goroutines.
type Registry struct {
	mu       sync.Mutex
	services map[string]*entry
	regErr   error
	regCalls int
	deCalls  int
}

type entry struct {
	instances map[string]discovery.Instance
	feed      feed.Feed
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry { return &Registry{services: map[string]*entry{}} }

func (r *Registry) entry(service string) *entry {
	e := r.services[service]
	if e == nil {
		e = &entry{instances: map[string]discovery.Instance{}}
		e.feed.Publish(discovery.Snapshot{Service: service, Updated: time.Now()})
		r.services[service] = e
	}
	return e
}

// publish rebuilds the snapshot from the instances, keeping err. r.mu must be held.
func (e *entry) publish(err error) {
	insts := slices.Collect(maps.Values(e.instances))
	slices.SortFunc(insts, func(a, b discovery.Instance) int { return cmp.Compare(a.ID, b.ID) })
	cur := e.feed.Cur
	s := discovery.Snapshot{Service: cur.Service, Instances: insts, Updated: time.Now(), Err: err}
	if err != nil {
		// A failing registry keeps serving the last known list; Updated stops moving.
		s.Instances, s.Updated = cur.Instances, cur.Updated
	}
	e.feed.Publish(s)
}

// Set replaces the instances of service. Instances with an empty ID get "address:port".
func (r *Registry) Set(service string, instances ...discovery.Instance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entry(service)
	clear(e.instances)
	for _, in := range instances {
		if in.ID == "" {
			in.ID = in.HostPort()
		}
		e.instances[in.ID] = in
	}
	e.publish(nil)
}

// Add adds or replaces one instance of service (by ID, "address:port" when empty).
func (r *Registry) Add(service string, in discovery.Instance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if in.ID == "" {
		in.ID = in.HostPort()
	}
	e := r.entry(service)
	e.instances[in.ID] = in
	e.publish(nil)
}

// Remove removes the instance id of service, if present.
func (r *Registry) Remove(service, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.entry(service)
	delete(e.instances, id)
	e.publish(nil)
}

// Fail makes the registry fail for service: watchers get a snapshot with err set and the last known
// instances, as a real watcher serves while its registry is down. Fail(service, nil) recovers, and the
// current instances (changes made meanwhile included) are published.
func (r *Registry) Fail(service string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entry(service).publish(err)
}

// FailRegistrations makes every Registrar's Register and Deregister return err (nil to stop).
func (r *Registry) FailRegistrations(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.regErr = err
}

// Instances returns the current instances of service, sorted by ID.
func (r *Registry) Instances(service string) []discovery.Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.services[service]
	if e == nil {
		return nil
	}
	insts := slices.Collect(maps.Values(e.instances))
	slices.SortFunc(insts, func(a, b discovery.Instance) int { return cmp.Compare(a.ID, b.ID) })
	return insts
}

// Calls returns how many times Register and Deregister were called on this registry's Registrars,
// failed calls included.
func (r *Registry) Calls() (registers, deregisters int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.regCalls, r.deCalls
}

// Watcher returns a discovery.Watcher of service. Its first snapshot exists at once (empty for an
// unknown service).
func (r *Registry) Watcher(service string) *Watcher {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entry(service)
	return &Watcher{r: r, service: service}
}

// Registrar returns a discovery.Registrar that adds in to service on Register and removes it on
// Deregister.
func (r *Registry) Registrar(service string, in discovery.Instance) *Registrar {
	if in.ID == "" {
		in.ID = in.HostPort()
	}
	return &Registrar{r: r, service: service, in: in}
}

// Watcher is a Watcher over a Registry. It needs no Close.
type Watcher struct {
	r       *Registry
	service string
}

var _ discovery.Watcher = (*Watcher)(nil)

// Next implements discovery.Watcher.
func (w *Watcher) Next(ctx context.Context, after uint64) (discovery.Snapshot, error) {
	w.r.mu.Lock()
	e := w.r.services[w.service] // entries are never removed
	w.r.mu.Unlock()
	return feed.Next(ctx, &w.r.mu, &e.feed, after, nil)
}

// Registrar registers one instance in a Registry.
type Registrar struct {
	r       *Registry
	service string
	in      discovery.Instance
}

var _ discovery.Registrar = (*Registrar)(nil)

// Register implements discovery.Registrar.
func (g *Registrar) Register(ctx context.Context) error {
	g.r.mu.Lock()
	g.r.regCalls++
	err := g.r.regErr
	g.r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("discoverytest: register %s: %w", g.in.ID, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	g.r.Add(g.service, g.in)
	return nil
}

// Deregister implements discovery.Registrar.
func (g *Registrar) Deregister(ctx context.Context) error {
	g.r.mu.Lock()
	g.r.deCalls++
	err := g.r.regErr
	g.r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("discoverytest: deregister %s: %w", g.in.ID, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	g.r.Remove(g.service, g.in.ID)
	return nil
}
