package chassis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/consul"
	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/internal/obs"
	"github.com/cloudchassis/kit/lifecycle"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Discovery modes (DISCOVERY).
const (
	DiscoveryNone   = "none"
	DiscoveryStatic = "static"
	DiscoveryConsul = "consul"
)

// StaticPrefix names the variables of static discovery: DISCOVERY_STATIC_<SERVICE>=host:port,... The
// service name is upper-cased and '-' and '.' become '_'.
const StaticPrefix = "DISCOVERY_STATIC_"

// staticKey returns the variable that lists a service's static instances.
func staticKey(service string) string {
	return StaticPrefix + strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(service))
}

// discoveryMode resolves DISCOVERY's default: consul when CONSUL_HTTP_ADDR is set, else static.
func (s *Service) discoveryMode() string {
	if m := s.settings.Discovery; m != "" {
		return m
	}
	if v, ok := s.opts.lookup("CONSUL_HTTP_ADDR"); ok && v != "" {
		return DiscoveryConsul
	}
	return DiscoveryStatic
}

// setupDiscovery installs a resolver and a registrar from the environment, unless options gave them.
func (s *Service) setupDiscovery() error {
	switch s.discoveryMode() {
	case DiscoveryNone:
		return nil
	case DiscoveryStatic:
		if s.opts.resolver == nil {
			s.opts.resolver = s.staticResolver
			return s.observeStatic()
		}
		return nil
	case DiscoveryEtcd:
		return s.setupEtcd()
	case DiscoveryDNS:
		// DNS registers nothing: with CONSUL_HTTP_ADDR, the Consul registrar below announces the
		// instance (Consul's DNS interface serves it); without, there is nothing more to set up.
		if err := s.setupDNS(); err != nil || !s.consulAddrSet() {
			return err
		}
	}
	cfg, err := consul.ConfigFromEnv(s.opts.lookup)
	if err != nil {
		return &config.Error{Problems: splitProblems(err)}
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("chassis: consul client: %w", err)
	}
	s.consul = client
	cc := consul.NewClient(client)
	if s.opts.resolver == nil {
		reg, err := consul.NewRegistry(cc, consul.WithMeterProvider(s.tel.MeterProvider()), consul.WithLogger(s.tel.Slog()))
		if err != nil {
			return fmt.Errorf("chassis: %w", err)
		}
		mode := map[string]consul.Consistency{"stale": consul.Stale, "leader": consul.Leader,
			"consistent": consul.Consistent, "cached": consul.Cached}[s.settings.ConsulConsistency]
		wopts := []consul.WatchOption{consul.WithConsistency(mode)}
		if s.settings.DiscoveryMaxStaleness > 0 {
			wopts = append(wopts, consul.WithMaxStaleness(s.settings.DiscoveryMaxStaleness))
		}
		s.opts.resolver = func(service string) (discovery.Watcher, func(), error) {
			w, err := reg.Watch(service, wopts...)
			if err != nil {
				return nil, nil, err
			}
			return w, func() { _ = w.Close() }, nil
		}
		// The registry outlives the clients that watch through it: it is closed after them.
		s.closers = append(s.closers, lifecycle.Hook{Name: "consul registry", Stop: func(context.Context) error { return reg.Close() }})
	}
	if s.opts.registrar == nil && s.settings.Register {
		where := "http://" + cfg.Address
		if strings.Contains(cfg.Address, "://") {
			where = cfg.Address // a unix socket
		} else if cfg.Scheme != "" {
			where = cfg.Scheme + "://" + cfg.Address
		}
		if v, ok := s.opts.lookup("CONSUL_HTTP_ADDR"); ok && strings.TrimSpace(v) != "" {
			where += " (CONSUL_HTTP_ADDR)"
		} else {
			where += " (the default; set CONSUL_HTTP_ADDR)"
		}
		s.opts.registrar = func(svc *Service) (discovery.Registrar, error) {
			return &agentRegistrar{svc: svc, api: client, agent: cc, where: where}, nil
		}
	}
	return nil
}

// Registration retries while the agent is unreachable, between these bounds (full jitter): an agent
// that starts beside the service (a sidecar, a node agent restarting) is usually up within seconds.
const (
	registerRetryBase = 100 * time.Millisecond
	registerRetryMax  = 2 * time.Second
)

// agentRegistrar registers the instance with the local Consul agent once the agent answers. Until
// then (connection refused, reset, timed out, or a 5xx), it retries with backoff, within the
// readiness hook's context, that is until START_TIMEOUT, and says so once in the log; a 4xx (a
// refused token, a rejected registration) fails at once. When neither ADVERTISE_ADDRESS nor HOST
// names an address, the agent's node address is registered, which is what Consul would use, and
// it names the instance ("orders-10.0.0.7-8080-…").
type agentRegistrar struct {
	svc   *Service
	api   *api.Client
	agent consul.Agent
	where string // the agent's address and where it came from, for messages

	reg *consul.Registrar // set by a successful Register
}

var _ discovery.Registrar = (*agentRegistrar)(nil)

// Register implements discovery.Registrar.
func (a *agentRegistrar) Register(ctx context.Context) error {
	if a.reg != nil {
		return a.reg.Register(ctx)
	}
	policy := backoff.Policy{Base: registerRetryBase, Max: registerRetryMax}
	for attempt := 1; ; attempt++ {
		err := a.register(ctx)
		if err == nil {
			if attempt > 1 {
				a.svc.log.Info("consul: agent reachable; registered", zap.String("agent", a.where), zap.Int("attempts", attempt))
			}
			return nil
		}
		reason, transient := agentTrouble(err)
		if !transient {
			return err
		}
		if ctx.Err() == nil && attempt == 1 {
			a.svc.log.Warn(fmt.Sprintf("%s %s: retrying until START_TIMEOUT (%s)", reason, a.where, a.svc.settings.StartTimeout),
				zap.Error(err))
		}
		if ctx.Err() != nil || backoff.Sleep(ctx, policy.Delay(attempt)) != nil {
			if errors.Is(ctx.Err(), context.Canceled) { // the start was cancelled (a signal): not a timeout
				return fmt.Errorf("%s %s: %w", reason, a.where, err)
			}
			return fmt.Errorf("%s %s within START_TIMEOUT (%s) (%d attempts): %w", reason, a.where, a.svc.settings.StartTimeout, attempt, err)
		}
	}
}

// register makes one attempt: it asks the agent for its node address when the registration needs
// it, then registers.
func (a *agentRegistrar) register(ctx context.Context) error {
	reg := a.svc.registration()
	if reg.Address == "" {
		var self struct{ Member struct{ Addr string } }
		if _, err := a.api.Raw().Query("/v1/agent/self", &self, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
			return err
		}
		reg.Address = self.Member.Addr
	}
	r, err := consul.NewRegistrar(a.agent, reg, consul.WithMeterProvider(a.svc.tel.MeterProvider()), consul.WithLogger(a.svc.tel.Slog()))
	if err != nil {
		return err
	}
	if err := r.Register(ctx); err != nil {
		return err
	}
	a.reg = r
	return nil
}

// Deregister implements discovery.Registrar.
func (a *agentRegistrar) Deregister(ctx context.Context) error {
	if a.reg == nil {
		return nil
	}
	return a.reg.Deregister(ctx)
}

// agentTrouble classifies a failed call to the agent: transient when no agent answered (a transport
// error) or it answered 5xx. reason starts the message that describes it.
func agentTrouble(err error) (reason string, transient bool) {
	var se api.StatusError
	switch {
	case errors.As(err, &se) && se.Code >= 500:
		return fmt.Sprintf("the Consul agent answers %d at", se.Code), true
	case errors.As(err, &se):
		return "", false
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return "no Consul agent answered at", true
	}
	var ue *url.Error
	var oe *net.OpError
	if errors.As(err, &ue) || errors.As(err, &oe) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "no Consul agent at", true
	}
	return "", false
}

// staticResolver serves DISCOVERY_STATIC_<SERVICE>.
func (s *Service) staticResolver(service string) (discovery.Watcher, func(), error) {
	key := staticKey(service)
	v, _ := s.opts.lookup(key)
	insts, err := discovery.ParseStatic(v)
	if err != nil {
		return nil, nil, &config.Error{Problems: []config.Problem{{Var: key, Value: v, HasValue: true, Err: err}}}
	}
	if len(insts) == 0 {
		return nil, nil, &config.Error{Problems: []config.Problem{{Var: key,
			Err: fmt.Errorf("no instances for %q: set %s=host:port,... or DISCOVERY=consul", service, key)}}}
	}
	s.static.Store(service, len(insts))
	return discovery.NewStatic(service, insts), nil, nil
}

// observeStatic reports the discovery gauges for static lists, as the Consul registry does for its
// watches: chassis.discovery.instances (the list's length) and chassis.discovery.snapshot.age (0: a
// fixed list is never stale). Without them, the instances panels of a dashboard stay empty for
// services configured with DISCOVERY_STATIC_<SERVICE>.
func (s *Service) observeStatic() error {
	in := obs.NewInstruments(s.tel.MeterProvider(), semconv.ScopeDiscovery)
	insts := in.ObservableGauge(semconv.MetricDiscoveryInstances, semconv.UnitInstance,
		"Instances in the list a discovery watch currently serves.")
	age := in.FloatObservableGauge(semconv.MetricDiscoverySnapshotAge, semconv.UnitSeconds,
		"Age of the instance list served while the registry is unreachable; 0 while the watch is connected.")
	in.Register(func(_ context.Context, o metric.Observer) error {
		s.static.Range(func(k, v any) bool {
			attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String(semconv.AttrPeerService, k.(string))))
			o.ObserveInt64(insts, int64(v.(int)), attrs)
			o.ObserveFloat64(age, 0, attrs)
			return true
		})
		return nil
	}, insts, age)
	if err := in.Err(); err != nil {
		return fmt.Errorf("chassis: discovery metrics: %w", err)
	}
	return nil
}

// registration describes this instance to Consul, from the bound listeners.
func (s *Service) registration() consul.Registration {
	_, port, _ := net.SplitHostPort(s.Addr())
	_, adminPort, _ := net.SplitHostPort(s.AdminAddr())
	p, _ := strconv.Atoi(port)
	addr := s.settings.AdvertiseAddress
	if addr == "" && s.settings.Host != "" && !net.ParseIP(s.settings.Host).IsUnspecified() {
		addr = s.settings.Host
	}
	// The agent runs on the instance's node: the loopback address reaches the admin port unless the
	// instance advertises another address.
	checkHost := addr
	if checkHost == "" {
		checkHost = "127.0.0.1"
	}
	meta := s.settings.ServiceMeta
	if gp := s.grpcPort(); gp != "" {
		meta = maps.Clone(meta)
		if meta == nil {
			meta = map[string]string{}
		}
		meta[MetaGRPCPort] = gp
	}
	return consul.Registration{
		Name:     s.name,
		Address:  addr,
		Port:     p,
		Tags:     s.settings.ServiceTags,
		Meta:     meta,
		CheckURL: "http://" + net.JoinHostPort(checkHost, adminPort) + "/readyz",
		// CONSUL_CHECK_INTERVAL: the fallback when deregistration fails must fit in DRAIN_DELAY.
		CheckInterval: s.settings.ConsulCheckInterval,
	}
}
