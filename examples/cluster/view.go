package main

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// RegistryView is what the registry says, as the dashboard shows it.
type RegistryView struct {
	Kind      string                    `json:"kind"`
	Addr      string                    `json:"addr"`
	Reachable bool                      `json:"reachable"`
	Error     string                    `json:"error,omitempty"`
	Checked   time.Time                 `json:"checked"`
	Services  map[string][]RegistryItem `json:"services"`
}

// RegistryItem is one registered instance.
type RegistryItem struct {
	ServiceID string `json:"service_id"`
	Instance  string `json:"instance"` // the shop's INSTANCE_ID, from the registration's metadata
	Address   string `json:"address"`
	Status    string `json:"status"` // passing, warning, critical
}

// registryWatcher polls the registry's health endpoint for every service.
type registryWatcher struct {
	kind, addr string
	client     *api.Client

	mu   sync.Mutex
	view RegistryView
}

func newRegistryWatcher(reg registry) (*registryWatcher, error) {
	c, err := api.NewClient(&api.Config{Address: reg.Addr(), WaitTime: time.Second})
	if err != nil {
		return nil, err
	}
	return &registryWatcher{kind: reg.Kind(), addr: reg.Addr(), client: c,
		view: RegistryView{Kind: reg.Kind(), Addr: reg.Addr(), Services: map[string][]RegistryItem{}}}, nil
}

func (w *registryWatcher) poll(ctx context.Context) {
	v := RegistryView{Kind: w.kind, Addr: w.addr, Reachable: true, Checked: time.Now(), Services: map[string][]RegistryItem{}}
	for _, s := range services {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		entries, _, err := w.client.Health().Service(s, "", false, (&api.QueryOptions{AllowStale: true}).WithContext(ctx))
		cancel()
		if err != nil {
			w.mu.Lock()
			old := w.view
			w.mu.Unlock()
			old.Reachable, old.Error, old.Checked = false, err.Error(), time.Now()
			w.set(old)
			return
		}
		for _, e := range entries {
			v.Services[s] = append(v.Services[s], RegistryItem{
				ServiceID: e.Service.ID, Instance: e.Service.Meta["instance_id"],
				Address: e.Service.Address + ":" + itoa(e.Service.Port), Status: e.Checks.AggregatedStatus(),
			})
		}
		sort.Slice(v.Services[s], func(i, j int) bool { return v.Services[s][i].Instance < v.Services[s][j].Instance })
	}
	w.set(v)
}

func (w *registryWatcher) set(v RegistryView) {
	w.mu.Lock()
	w.view = v
	w.mu.Unlock()
}

func (w *registryWatcher) get() RegistryView {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.view
}

// passing counts the passing instances of service in the last view.
func (v RegistryView) passing(service string) int {
	n := 0
	for _, it := range v.Services[service] {
		if it.Status == api.HealthPassing {
			n++
		}
	}
	return n
}
