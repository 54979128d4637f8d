package chassis

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/dns"
	"github.com/cloudchassis/kit/lifecycle"
)

// DiscoveryDNS finds services through DNS records (DISCOVERY=dns): see DNSDiscoveryConfig.
const DiscoveryDNS = "dns"

// DNSServicePlaceholder is replaced by the service name in DISCOVERY_DNS_TEMPLATE.
const DNSServicePlaceholder = "{service}"

// DNSDiscoveryConfig configures DISCOVERY=dns (Settings embeds it): every service name given to
// Client is turned into a DNS name by DISCOVERY_DNS_TEMPLATE and followed with discovery/dns.
//
// DNS registers nothing. With Consul's DNS interface, instances still register with the Consul agent:
// when CONSUL_HTTP_ADDR is set, DISCOVERY=dns keeps the Consul registrar (REGISTER), so a service
// registers with Consul and its callers find it through Consul's DNS, as Consul-DNS clients in other
// languages and edge proxies (HAProxy) do. In Kubernetes, the endpoints of a headless service are
// the registration: leave CONSUL_HTTP_ADDR unset.
type DNSDiscoveryConfig struct {
	DNSServer   string        `envconfig:"DISCOVERY_DNS_SERVER" desc:"with DISCOVERY=dns, the DNS server to ask, host:port (Consul's agent: 127.0.0.1:8600; port 53 if omitted); default the nameservers of /etc/resolv.conf"`
	DNSTemplate string        `envconfig:"DISCOVERY_DNS_TEMPLATE" default:"{service}.service.consul" desc:"with DISCOVERY=dns, the DNS name of a service, {service} standing for its name: {service}.service.consul (Consul), _http._tcp.{service}.<namespace>.svc.cluster.local (Kubernetes headless service); SRV records unless DISCOVERY_DNS_PORT is set"`
	DNSPort     int           `envconfig:"DISCOVERY_DNS_PORT" default:"0" validate:"min=0,max=65535" desc:"with DISCOVERY=dns, resolve A/AAAA records and call this port on every address, instead of reading SRV records; 0 reads SRV records"`
	DNSRefresh  time.Duration `envconfig:"DISCOVERY_DNS_REFRESH_MIN" default:"1s" validate:"gt=0" desc:"with DISCOVERY=dns, the shortest time between two refreshes of a name, whatever its TTL (Consul answers with TTL 0, so this is its refresh interval)"`
	DNSMaxTTL   time.Duration `envconfig:"DISCOVERY_DNS_REFRESH_MAX" default:"30s" validate:"gt=0" desc:"with DISCOVERY=dns, the longest time between two refreshes of a name, whatever its TTL"`
}

// dnsServer returns DISCOVERY_DNS_SERVER as host:port, port 53 when it has none.
func (c DNSDiscoveryConfig) dnsServer() (string, error) {
	v := strings.TrimSpace(c.DNSServer)
	if _, p, err := net.SplitHostPort(v); err == nil {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("port %q is not a number in 1-65535", p)
		}
		return v, nil
	}
	if strings.Contains(strings.Trim(v, "[]"), ":") && net.ParseIP(strings.Trim(v, "[]")) == nil || v == "" {
		return "", fmt.Errorf("not host:port")
	}
	return net.JoinHostPort(strings.Trim(v, "[]"), "53"), nil
}

// setupDNS installs the DISCOVERY=dns resolver, unless WithResolver gave one.
func (s *Service) setupDNS() error {
	if s.opts.resolver != nil {
		return nil
	}
	c := s.settings.DNSDiscoveryConfig
	var problems []config.Problem
	if !strings.Contains(c.DNSTemplate, DNSServicePlaceholder) {
		problems = append(problems, config.Problem{Var: "DISCOVERY_DNS_TEMPLATE", Value: c.DNSTemplate, HasValue: true,
			Err: fmt.Errorf("has no %s: every service would resolve the same name", DNSServicePlaceholder)})
	}
	opts := []dns.Option{
		dns.WithRefresh(c.DNSRefresh, c.DNSMaxTTL), dns.WithMaxStaleness(s.settings.DiscoveryMaxStaleness),
		dns.WithMeterProvider(s.tel.MeterProvider()), dns.WithLogger(s.tel.Slog()),
	}
	if c.DNSServer != "" {
		addr, err := c.dnsServer()
		if err != nil {
			problems = append(problems, config.Problem{Var: "DISCOVERY_DNS_SERVER", Value: c.DNSServer, HasValue: true, Err: err})
		}
		opts = append(opts, dns.WithServers(addr))
	}
	if len(problems) > 0 {
		return &config.Error{Problems: problems}
	}
	r, err := dns.New(opts...)
	if err != nil {
		return fmt.Errorf("chassis: %w", err)
	}
	s.opts.resolver = func(service string) (discovery.Watcher, func(), error) {
		name := strings.ReplaceAll(c.DNSTemplate, DNSServicePlaceholder, service)
		w, err := r.Watch(name, dns.WithService(service), dns.WithPort(c.DNSPort))
		if err != nil {
			return nil, nil, err
		}
		return w, func() { _ = w.Close() }, nil
	}
	// The resolver outlives the clients that watch through it: it is closed after them.
	s.closers = append(s.closers, lifecycle.Hook{Name: "dns resolver", Stop: func(context.Context) error { return r.Close() }})
	return nil
}

// consulAddrSet reports whether CONSUL_HTTP_ADDR names an agent.
func (s *Service) consulAddrSet() bool {
	v, ok := s.opts.lookup("CONSUL_HTTP_ADDR")
	return ok && strings.TrimSpace(v) != ""
}
