package consul_test

import (
	"context"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// fakeHealth is an in-memory health endpoint with Consul's blocking semantics, for tests under synctest.
type fakeHealth struct {
	mu      sync.Mutex
	index   uint64
	entries map[string]*api.ServiceEntry
	changed chan struct{}
	err     error
	// flap, when set, makes every query return at once with a new index and unchanged data: the
	// behaviour that put go-kit's watcher into a tight loop.
	flap bool
	hang bool // queries block until their context ends
	// epoch changes when the index is reset; like the abandon channel of Consul's state store after a
	// snapshot restore, it ends every blocked query at once.
	epoch   int
	calls   int
	queries []api.QueryOptions
	tags    [][]string
}

func newFakeHealth() *fakeHealth {
	return &fakeHealth{index: 1, entries: map[string]*api.ServiceEntry{}, changed: make(chan struct{})}
}

func (f *fakeHealth) bump() {
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeHealth) add(id, addr string, port int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries[id] = &api.ServiceEntry{
		Node:    &api.Node{Node: "n1", Address: "127.0.0.1"},
		Service: &api.AgentService{ID: id, Service: "svc", Address: addr, Port: port, Weights: api.AgentWeights{Passing: 1}},
	}
	f.bump()
}

func (f *fakeHealth) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.entries, id)
	f.bump()
}

func (f *fakeHealth) setErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
	close(f.changed) // wake blocked queries: an outage breaks their connections too
	f.changed = make(chan struct{})
}

func (f *fakeHealth) setIndex(i uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index = i
	f.epoch++
	close(f.changed)
	f.changed = make(chan struct{})
}

// restart simulates an agent that came back without its state: no entries and a fresh, lower index.
// Blocked queries end, as the restart broke their connections.
func (f *fakeHealth) restart(index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.entries)
	f.index = index
	f.epoch++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeHealth) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeHealth) lastQuery() api.QueryOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[len(f.queries)-1]
}

func (f *fakeHealth) Service(ctx context.Context, service string, tags []string, passingOnly bool, q *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
	f.mu.Lock()
	f.calls++
	f.queries = append(f.queries, *q)
	f.tags = append(f.tags, tags)
	if f.hang {
		f.mu.Unlock()
		<-ctx.Done()
		return nil, nil, ctx.Err()
	}
	if f.flap {
		f.index++
	}
	var timeout <-chan time.Time
	if q.WaitTime > 0 {
		timeout = time.After(q.WaitTime)
	}
	epoch := f.epoch
	for f.err == nil && q.WaitIndex > 0 && f.index <= q.WaitIndex && f.epoch == epoch {
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			f.mu.Lock()
			return f.result()
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		f.mu.Lock()
	}
	if f.err != nil {
		err := f.err
		f.mu.Unlock()
		return nil, nil, err
	}
	return f.result()
}

// result returns a deep copy of the entries, as decoding a response would. f.mu must be held; it is
// released.
func (f *fakeHealth) result() ([]*api.ServiceEntry, *api.QueryMeta, error) {
	defer f.mu.Unlock()
	ids := slices.Sorted(maps.Keys(f.entries))
	out := make([]*api.ServiceEntry, 0, len(ids))
	for _, id := range ids {
		e := *f.entries[id]
		s := *e.Service
		e.Service = &s
		out = append(out, &e)
	}
	return out, &api.QueryMeta{LastIndex: f.index}, nil
}

// fakeAgent is an in-memory agent for Registrar tests.
type fakeAgent struct {
	mu        sync.Mutex
	services  map[string]*api.AgentServiceRegistration
	registers int
	ttls      int
	err       error
}

func newFakeAgent() *fakeAgent {
	return &fakeAgent{services: map[string]*api.AgentServiceRegistration{}}
}

func (a *fakeAgent) Register(_ context.Context, reg *api.AgentServiceRegistration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.err
	}
	a.registers++
	c := *reg
	a.services[reg.ID] = &c
	return nil
}

func (a *fakeAgent) Deregister(_ context.Context, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.err
	}
	delete(a.services, id)
	return nil
}

func (a *fakeAgent) Registered(_ context.Context, id string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return false, a.err
	}
	_, ok := a.services[id]
	return ok, nil
}

func (a *fakeAgent) UpdateTTL(_ context.Context, checkID, _, status string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return a.err
	}
	for _, s := range a.services {
		if s.Check != nil && s.Check.CheckID == checkID {
			a.ttls++
			s.Check.Status = status
			return nil
		}
	}
	return api.StatusError{Code: 404, Body: "Unknown check ID " + strconv.Quote(checkID)}
}

func (a *fakeAgent) forget() {
	a.mu.Lock()
	defer a.mu.Unlock()
	clear(a.services)
}

func (a *fakeAgent) snapshot() (services map[string]*api.AgentServiceRegistration, registers, ttls int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.services), a.registers, a.ttls
}

// forget2 is forget for callers that hold a.mu.
func (a *fakeAgent) forget2() { clear(a.services) }
