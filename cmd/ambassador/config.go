package main

import (
	"errors"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/cloudchassis/kit/config"
)

// Config is the ambassador's own environment, read with the chassis settings.
type Config struct {
	Routes         []string      `envconfig:"AMBASSADOR_ROUTES" desc:"services callers may reach through the ambassador, comma-separated, or * for every service discovery knows (DISCOVERY_STATIC_<NAME> set, or in Consul's catalog); empty forwards nothing"`
	HostSuffix     string        `envconfig:"AMBASSADOR_HOST_SUFFIX" desc:"with it, Host: <service>.<suffix> routes to <service> with the path unchanged, also with AMBASSADOR_ROUTES=*; Host: <service> does for the services listed by name"`
	MaxServices    int           `envconfig:"AMBASSADOR_MAX_SERVICES" default:"64" validate:"gte=1" desc:"with AMBASSADOR_ROUTES=*, the most services the ambassador keeps clients (and discovery watches) for; beyond it new services get 503"`
	CatalogRefresh time.Duration `envconfig:"AMBASSADOR_CATALOG_REFRESH" default:"2s" validate:"gt=0" desc:"with AMBASSADOR_ROUTES=* and Consul, a name not in the catalog is looked up again at most this often (unknown names get 404 from the cached list meanwhile)"`

	LocalName      string        `envconfig:"AMBASSADOR_LOCAL_NAME" desc:"name of the co-located service registered in Consul; empty registers nothing"`
	LocalAddr      string        `envconfig:"AMBASSADOR_LOCAL_ADDR" desc:"host:port where the ambassador reaches the co-located service; its port is the one registered"`
	LocalHealth    string        `envconfig:"AMBASSADOR_LOCAL_HEALTH" default:"/" desc:"path of the co-located service that answers 2xx when it is healthy; part of the ambassador's /readyz, which Consul checks"`
	LocalAdvertise string        `envconfig:"AMBASSADOR_LOCAL_ADVERTISE" desc:"address registered for the co-located service; default the host of AMBASSADOR_LOCAL_ADDR when it is a specific non-loopback address, else ADVERTISE_ADDRESS, else the Consul agent's node address"`
	LocalTimeout   time.Duration `envconfig:"AMBASSADOR_LOCAL_TIMEOUT" default:"2s" validate:"gt=0" desc:"limit of one health request to the co-located service"`
}

// wildcard is AMBASSADOR_ROUTES' value for every known service.
const wildcard = "*"

// serviceName is what a routable service name may look like: a DNS label or a dotted name, as Consul
// accepts, so that a path segment or a Host cannot name anything else.
var serviceName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9_.-]{0,126}[A-Za-z0-9])?$`)

// Validate implements config's cross-field check.
func (c *Config) Validate() error {
	var errs []error
	routes := strings.Join(c.Routes, ",")
	for _, r := range c.Routes {
		if r == wildcard && len(c.Routes) > 1 {
			errs = append(errs, config.Invalid("AMBASSADOR_ROUTES", routes, "* stands alone: it already allows every service"))
		} else if r != wildcard && !serviceName.MatchString(r) {
			errs = append(errs, config.Invalid("AMBASSADOR_ROUTES", routes, "\""+r+"\" is not a service name (letters, digits, '-', '_', '.')"))
		}
	}
	if c.HostSuffix != "" && !serviceName.MatchString(c.HostSuffix) {
		errs = append(errs, config.Invalid("AMBASSADOR_HOST_SUFFIX", c.HostSuffix, "not a domain name"))
	}
	switch {
	case c.LocalName != "" && c.LocalAddr == "":
		errs = append(errs, errors.New("AMBASSADOR_LOCAL_ADDR: required with AMBASSADOR_LOCAL_NAME: set it to the host:port of the co-located service"))
	case c.LocalName == "" && c.LocalAddr != "":
		errs = append(errs, errors.New("AMBASSADOR_LOCAL_NAME: required with AMBASSADOR_LOCAL_ADDR: the name to register the co-located service under"))
	case c.LocalName != "" && !serviceName.MatchString(c.LocalName):
		errs = append(errs, config.Invalid("AMBASSADOR_LOCAL_NAME", c.LocalName, "not a service name (letters, digits, '-', '_', '.')"))
	}
	if c.LocalAddr != "" {
		if _, port, err := net.SplitHostPort(c.LocalAddr); err != nil || port == "" || port == "0" {
			errs = append(errs, config.Invalid("AMBASSADOR_LOCAL_ADDR", c.LocalAddr, "not host:port with a port (127.0.0.1:8000)"))
		}
	}
	if !strings.HasPrefix(c.LocalHealth, "/") {
		errs = append(errs, config.Invalid("AMBASSADOR_LOCAL_HEALTH", c.LocalHealth, "must be a path starting with /"))
	}
	if c.LocalAdvertise != "" && net.ParseIP(c.LocalAdvertise) == nil && !serviceName.MatchString(c.LocalAdvertise) {
		errs = append(errs, config.Invalid("AMBASSADOR_LOCAL_ADVERTISE", c.LocalAdvertise, "not an IP address or host name"))
	}
	return errors.Join(errs...)
}

// all reports whether every known service may be reached (AMBASSADOR_ROUTES=*).
func (c *Config) all() bool { return slices.Contains(c.Routes, wildcard) }
