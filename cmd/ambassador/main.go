package main

import (
	"net/http"
	"os"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
)

func main() {
	a := newAmbassador(loopbackByDefault(os.LookupEnv))
	chassis.Main("ambassador", a.setup, append(a.options(), chassis.WithEnv(a.lookup))...)
}

// loopbackByDefault makes HOST default to 127.0.0.1 instead of every interface: an ambassador
// serves the processes of its own node, with its own identity (CLIENT_<NAME>_TLS_* certificates
// included), and must not be an open proxy into the system for anyone who reaches the node. HOST=
// 0.0.0.0 (or a specific address) serves others, for example a Consul agent in another network
// namespace that checks the admin port (docs/ambassador.md).
func loopbackByDefault(lookup config.Lookup) config.Lookup {
	return func(key string) (string, bool) {
		v, ok := lookup(key)
		if key == "HOST" && (!ok || v == "") {
			return "127.0.0.1", true
		}
		return v, ok
	}
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
	cat, err := a.catalog(svc)
	if err != nil {
		return err
	}
	a.router = newRouter(client, a.cfg, cat, svc.Slog())
	svc.Handle("/", a.router)
	if a.cfg.LocalName != "" {
		a.local = newLocal(svc, a.cfg)
	}
	return nil
}
