package chassis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
	"github.com/cloudchassis/kit/resilience"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Resolver returns a watcher over a service's instances, and a function that releases it when the
// Service stops. The registries of discovery/consul and discovery/etcd, discovery.Static and
// discoverytest's registry all fit.
type Resolver func(service string) (w discovery.Watcher, release func(), err error)

// WithResolver sets how Client finds the instances of a service.
func WithResolver(r Resolver) Option { return optionFunc(func(o *options) { o.resolver = r }) }

// ClientOption configures one dependency's client.
type ClientOption interface{ apply(*clientOptions) }

type clientOptionFunc func(*clientOptions)

func (f clientOptionFunc) apply(o *clientOptions) { f(o) }

type clientOptions struct {
	lb         []lb.Option
	resilience []func(*resilience.Config)
	transport  []func(*TransportConfig)
	grpc       []grpcclient.Option // WithGRPC, for GRPCClient
}

// WithResilience adjusts the dependency's resilience settings in code. The environment
// (CLIENT_<NAME>_*) still overrides what f sets, and f overrides the defaults.
func WithResilience(f func(*resilience.Config)) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.resilience = append(o.resilience, f) })
}

// ClientPrefix returns the prefix of a dependency's variables: CLIENT_PRICING for "pricing"; '-' and
// '.' become '_'.
func ClientPrefix(service string) string {
	return "CLIENT_" + strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToUpper(service))
}

// WithClientDefaults gives every Client of the Service options that come before the call's own:
// f(service) for each dependency. Test harnesses use it to route calls through fault-injecting
// transports (chassistest); a service uses it for settings common to all its dependencies.
func WithClientDefaults(f func(service string) []ClientOption) Option {
	return optionFunc(func(o *options) { o.clientDefaults = f })
}

// WithBalancer passes options to the dependency's balancer (policy, outlier ejection, ...).
func WithBalancer(opts ...lb.Option) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.lb = append(o.lb, opts...) })
}

// ErrNoResolver is returned by calls through a Client when the Service has no way to find instances.
var ErrNoResolver = errors.New("chassis: no resolver for service names (set DISCOVERY or use WithResolver)")

type dependency struct {
	bal       *lb.Balancer
	release   func()
	client    *http.Client
	transport *http.Transport // its idle connections are closed when the Service stops
}

// Client returns an *http.Client for calls to another service by name: "http://pricing/prices/42".
//
// The chain, outer to inner: span and HTTP client metrics; the dependency's breaker; overall
// timeout; retries (idempotent or marked requests, full-jitter backoff, Retry-After, a retry budget of
// 20% + 10/s by default); optional hedging under the same budget; a balancer pick per attempt (P2C
// peak-EWMA by default, outlier ejection, instances with an open breaker skipped); the instance's
// breaker; per-attempt timeout; bulkhead; deadline propagation; the dependency's own http.Transport
// (see TransportConfig: idle connections kept per instance, HTTP/2 with TLS instances that offer it,
// TLS from CLIENT_TLS_* and CLIENT_<NAME>_TLS_* with certificates reloaded on rotation, new
// connections counted). Settings come from resilience.DefaultConfig and DefaultTransportConfig, then
// WithResilience and WithTransport, then CLIENT_<NAME>_* variables (see resilience.Config and
// TransportConfig). When Client is called before Run, a dependency that cannot work (a bad
// variable, no DISCOVERY_STATIC_<SERVICE> list) makes Run fail before anything starts, with a
// *config.Error listing every such problem; after Run started, calls through it fail instead.
// Clients are cached by name; the first call fixes the options. The
// balancer follows discovery from Run's start until the Service stops, after the public server has
// drained, so that in-flight handlers can still call out.
func (s *Service) Client(service string, opts ...ClientOption) *http.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.deps[service]; ok {
		return d.client
	}
	var co clientOptions
	if s.opts.clientDefaults != nil {
		opts = append(s.opts.clientDefaults(service), opts...)
	}
	for _, o := range opts {
		o.apply(&co)
	}
	d, err := s.newDependency(service, co)
	if err != nil {
		if s.running {
			// Too late to stop the start: calls through this client fail with err.
			err = fmt.Errorf("chassis: client %q: %w", service, err)
			s.log.Error("client unusable", zap.String(semconv.AttrPeerService, service), zap.Error(err))
		} else {
			// Run fails before anything starts, with exit code 2 for configuration problems.
			problems, fails := partitionProblems(err)
			s.clientErrs = append(s.clientErrs, problems...)
			for _, f := range fails {
				s.clientFails = append(s.clientFails, fmt.Errorf("chassis: client %q: %w", service, f))
			}
			err = fmt.Errorf("chassis: client %q: %w", service, err)
		}
		d = &dependency{client: &http.Client{Transport: errTransport{err}}}
	} else if s.clientsStarted {
		if err := d.bal.Start(); err != nil {
			s.log.Error("client start", zap.String(semconv.AttrPeerService, service), zap.Error(err))
		}
	}
	s.deps[service] = d
	return d.client
}

func (s *Service) newDependency(service string, co clientOptions) (*dependency, error) {
	if strings.ContainsAny(service, "/:") || service == "" {
		return nil, fmt.Errorf("bad service name %q", service)
	}
	rc, tc, err := s.dependencyConfig(service, co)
	if err != nil {
		return nil, errors.Join(err, s.probeResolver(service)) // every problem of the dependency at once
	}
	dep, err := resilience.NewDependency(service, rc,
		resilience.WithMeterProvider(s.tel.MeterProvider()), resilience.WithTracerProvider(s.tel.TracerProvider()))
	if err != nil {
		return nil, err
	}
	if s.opts.resolver == nil {
		return nil, noResolver(service)
	}
	transport, base, err := newTransport(service, tc, s.tel.MeterProvider())
	if err != nil {
		// Unreadable certificate or CA files: the environment is wrong, and Run fails with it.
		return nil, &config.Error{Problems: []config.Problem{{Err: fmt.Errorf("%s_TLS_*: %w", ClientPrefix(service), err)}}}
	}
	w, release, err := s.opts.resolver(service)
	if err != nil {
		return nil, err
	}
	bal, err := lb.New(service, w, s.balancerOptions(co, tc,
		lb.WithMeterProvider(s.tel.MeterProvider()),
		lb.WithBaseTransport(base), // WithBalancer's options come after, and may replace it
		lb.WithInstancePolicy(dep))...)
	if err != nil {
		if release != nil {
			release()
		}
		return nil, err
	}
	rt := s.tel.Transport(dep.Wrap(lb.NewTransport(bal)))
	return &dependency{bal: bal, release: release, client: &http.Client{Transport: rt}, transport: transport}, nil
}

// dependencyConfig layers a dependency's settings: defaults (and CLIENT_TLS_* for TLS), then the
// code's WithResilience and WithTransport, then CLIENT_<NAME>_*. Every bad variable is reported.
func (s *Service) dependencyConfig(service string, co clientOptions) (resilience.Config, TransportConfig, error) {
	rc := resilience.DefaultConfig()
	for _, f := range co.resilience {
		f(&rc)
	}
	tc := DefaultTransportConfig()
	tc.TLS = s.settings.ClientTLS
	for _, f := range co.transport {
		f(&tc)
	}
	prefix := ClientPrefix(service)
	copts := []config.Option{config.WithStrictPrefix(prefix), config.WithoutDefaults(), config.WithLookup(s.opts.lookup)}
	var all config.Error
	errs := []error{config.Load(&rc, copts...), config.Load(&tc, copts...)}
	if errs[1] == nil { // the relations between the TLS settings, once each is valid
		errs = append(errs, tc.TLS.Check(prefix+"_TLS"))
		if err := checkLBPolicy(tc.LBPolicy); err != nil {
			errs = append(errs, config.Invalid(prefix+"_LB_POLICY", tc.LBPolicy, err.Error()))
		}
	}
	for _, err := range errs {
		var ce *config.Error
		var cp *config.Problem
		switch {
		case errors.As(err, &ce):
			all.Problems = append(all.Problems, ce.Problems...)
		case errors.As(err, &cp):
			all.Problems = append(all.Problems, *cp)
		case err != nil:
			all.Problems = append(all.Problems, config.Problem{Err: err})
		}
	}
	if len(all.Problems) > 0 {
		return rc, tc, &all
	}
	return rc, tc, nil
}

// clientsHook starts the balancers when Run starts and closes them when it stops.
func (s *Service) startClients(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clientsStarted = true
	for name, d := range s.deps {
		if d.bal == nil {
			continue
		}
		if err := d.bal.Start(); err != nil {
			return fmt.Errorf("client %q: %w", name, err)
		}
	}
	return nil
}

func (s *Service) stopClients(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for name, d := range s.deps {
		if d.bal != nil {
			if err := d.bal.Close(); err != nil {
				errs = append(errs, fmt.Errorf("client %q: %w", name, err))
			}
		}
		if d.release != nil {
			d.release()
		}
		d.client.CloseIdleConnections()
		if d.transport != nil {
			d.transport.CloseIdleConnections()
		}
	}
	s.clientsStarted = false
	return errors.Join(errs...)
}

type errTransport struct{ err error }

func (t errTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, t.err }

// balancerOptions are a dependency's balancer options, HTTP or gRPC: LB_POLICY, then chassis' own
// (own), then the code's WithBalancer, then CLIENT_<NAME>_LB_POLICY, so that the policy is the
// dependency's variable, else the code's choice, else LB_POLICY.
func (s *Service) balancerOptions(co clientOptions, tc TransportConfig, own ...lb.Option) []lb.Option {
	opts := append(append([]lb.Option{lb.WithPolicy(cmp.Or(s.settings.LBPolicy, lb.P2C))}, own...), co.lb...)
	if tc.LBPolicy != "" {
		opts = append(opts, lb.WithPolicy(tc.LBPolicy))
	}
	return opts
}
