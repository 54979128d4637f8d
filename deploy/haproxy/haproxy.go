package haproxy

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/template"
	"time"
)

//go:embed haproxy.cfg.tmpl
var cfgText string

var cfgTemplate = template.Must(template.New("haproxy.cfg").Parse(cfgText))

// Defaults of Config.
const (
	// DefaultSlots is how many instances a backend can hold (server-template's count).
	DefaultSlots = 10
	// DefaultResolve is HAProxy's "timeout resolve", how often it asks Consul again: a deregistered
	// instance leaves the pool within that much, well inside the default DRAIN_DELAY of 5 s.
	DefaultResolve = time.Second
)

// Config is what the committed haproxy.cfg.tmpl needs: an HTTP frontend that routes to the instances
// of one Consul service, found through Consul's DNS interface.
type Config struct {
	// Listen is the frontend's bind address, for example "0.0.0.0:80".
	Listen string
	// DNS is Consul's DNS interface, "host:port" (an agent's default is 127.0.0.1:8600).
	DNS string
	// Service is the Consul service name (SERVICE_NAME of the Chassis instances).
	Service string
	// Slots is the most instances HAProxy routes to; 0 means DefaultSlots.
	Slots int
	// Resolve is HAProxy's "timeout resolve"; 0 means DefaultResolve. It must stay well below
	// DRAIN_DELAY, or instances are still routed to after they stopped (docs/discovery.md).
	Resolve time.Duration
}

// Write renders the configuration.
func (c Config) Write(w io.Writer) error {
	if c.Listen == "" || c.DNS == "" || c.Service == "" {
		return errors.New("haproxy: Config needs Listen, DNS and Service")
	}
	if strings.ContainsAny(c.Service, " \t\n#") {
		return fmt.Errorf("haproxy: service name %q cannot appear in a configuration", c.Service)
	}
	if c.Slots <= 0 {
		c.Slots = DefaultSlots
	}
	if c.Resolve <= 0 {
		c.Resolve = DefaultResolve
	}
	return cfgTemplate.Execute(w, struct {
		Listen, DNS, Service, Resolve string
		Slots                         int
	}{c.Listen, c.DNS, c.Service, strconv.FormatInt(c.Resolve.Milliseconds(), 10) + "ms", c.Slots})
}
