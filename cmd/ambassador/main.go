package main

import (
	"net/http"
	"os"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
)

func main() {
	a := newAmbassador(os.LookupEnv)
	chassis.Main("ambassador", a.setup, a.options()...)
}

// ambassador is the program's state: its configuration, read by chassis.New, and what setup builds.
type ambassador struct {
	cfg    Config
	lookup config.Lookup // the environment, for DISCOVERY_STATIC_<NAME> with AMBASSADOR_ROUTES=*
	local  *local        // nil without AMBASSADOR_LOCAL_NAME
	router *router
}

func newAmbassador(lookup config.Lookup) *ambassador { return &ambassador{lookup: lookup} }

// options are the chassis options the ambassador needs: its configuration, and its registrar, which
// registers the local service instead of the ambassador itself.
func (a *ambassador) options() []chassis.Option {
	return []chassis.Option{chassis.WithConfig(&a.cfg), chassis.WithRegistrar(a.registrar)}
}

// setup builds the router and the local service's readiness check and registration.
func (a *ambassador) setup(svc *chassis.Service) error {
	client := func(service string) *http.Client { return svc.Client(service) }
	a.router = newRouter(client, a.cfg, a.catalog(svc), svc.Slog())
	svc.Handle("/", a.router)
	if a.cfg.LocalName != "" {
		a.local = newLocal(svc, a.cfg)
	}
	return nil
}
