package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
)

// catalog tells whether discovery knows a service, before the ambassador creates a client, and so a
// discovery watch, for it (AMBASSADOR_ROUTES=*): names nobody registered get 404 and cost nothing.
type catalog interface {
	Has(ctx context.Context, service string) (bool, error)
}

// catalog returns how the ambassador learns which services exist: Consul's catalog with
// DISCOVERY=consul, else the DISCOVERY_STATIC_<NAME> variables. DNS discovery without Consul has no
// list of services, so AMBASSADOR_ROUTES=* cannot be bounded by one and is refused at start.
func (a *ambassador) catalog(svc *chassis.Service) (catalog, error) {
	if c := svc.Consul(); c != nil {
		return newCachedCatalog(consulServices(c.Catalog()), a.cfg.CatalogRefresh, time.Now), nil
	}
	if slices.Contains(a.cfg.Routes, wildcard) && svc.Settings().Discovery == chassis.DiscoveryDNS {
		return nil, &config.Error{Problems: []config.Problem{{Var: "AMBASSADOR_ROUTES", Value: wildcard, HasValue: true,
			Err: errors.New("* needs a list of services (DISCOVERY=consul or static); with DISCOVERY=dns, name the services")}}}
	}
	return staticCatalog{a.lookup}, nil
}

// staticCatalog knows the services that have a DISCOVERY_STATIC_<NAME> variable.
type staticCatalog struct{ lookup config.Lookup }

// Has answers for one spelling of each variable's service only, lower case with '-' (ORDER_SERVICE
// is "order-service"): the variable's name folds case, '-', '.' and '_', and without one spelling
// "Orders", "ORDERS" and "or.ders" would each take one of AMBASSADOR_MAX_SERVICES' slots for the
// same service.
func (s staticCatalog) Has(_ context.Context, service string) (bool, error) {
	if service != strings.ToLower(service) || strings.ContainsAny(service, "._") {
		return false, nil
	}
	// ClientPrefix spells the name the way DISCOVERY_STATIC_<NAME> does: upper case, '-' and '.' as '_'.
	v, ok := s.lookup(chassis.StaticPrefix + strings.TrimPrefix(chassis.ClientPrefix(service), "CLIENT_"))
	return ok && strings.TrimSpace(v) != "", nil
}

// cachedCatalog keeps the list of service names and fetches it again, for a name it lacks, at most
// once per refresh: a flood of unknown names costs the registry one request per refresh. Safe for
// concurrent use; concurrent misses wait for one fetch.
type cachedCatalog struct {
	fetch   func(ctx context.Context) ([]string, error)
	refresh time.Duration
	now     func() time.Time

	mu      sync.Mutex
	names   map[string]bool
	fetched time.Time // zero: never
}

func newCachedCatalog(fetch func(context.Context) ([]string, error), refresh time.Duration, now func() time.Time) *cachedCatalog {
	return &cachedCatalog{fetch: fetch, refresh: refresh, now: now}
}

func (c *cachedCatalog) Has(ctx context.Context, service string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.names[service] {
		return true, nil
	}
	if !c.fetched.IsZero() && c.now().Sub(c.fetched) < c.refresh {
		return false, nil
	}
	names, err := c.fetch(ctx)
	if err != nil {
		return false, err
	}
	c.names = make(map[string]bool, len(names))
	for _, n := range names {
		c.names[n] = true
	}
	c.fetched = c.now()
	return c.names[service], nil
}

// consulServices lists the services in Consul's catalog (any server may answer: a stale list only
// delays a new service by a refresh).
func consulServices(cat *api.Catalog) func(context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		m, _, err := cat.Services((&api.QueryOptions{AllowStale: true}).WithContext(ctx))
		if err != nil {
			return nil, err
		}
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, n)
		}
		return names, nil
	}
}
