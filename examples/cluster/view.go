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

// registryWatcher polls the registry for every service.
type registryWatcher struct {
	reg registry

	mu   sync.Mutex
	view RegistryView
}

func newRegistryWatcher(reg registry) (*registryWatcher, error) {
	return &registryWatcher{reg: reg,
		view: RegistryView{Kind: reg.Kind(), Addr: reg.Addr(), Services: map[string][]RegistryItem{}}}, nil
}

func (w *registryWatcher) poll(ctx context.Context) {
	v := RegistryView{Kind: w.reg.Kind(), Addr: w.reg.Addr(), Reachable: true, Checked: time.Now(), Services: map[string][]RegistryItem{}}
	for _, s := range services {
		items, err := w.reg.List(ctx, s)
		if err != nil {
			w.mu.Lock()
			old := w.view
			w.mu.Unlock()
			old.Reachable, old.Error, old.Checked = false, err.Error(), time.Now()
			w.set(old)
			return
		}
		v.Services[s] = items
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
