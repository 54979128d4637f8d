package chassis

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"go.uber.org/zap"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
)

// Resolver returns a watcher over a service's instances, and a function that releases it when the
// Service stops. discovery/consul's Registry, discovery.Static and discoverytest's registry all fit.
type Resolver func(service string) (w discovery.Watcher, release func(), err error)

// WithResolver sets how Client finds the instances of a service.
func WithResolver(r Resolver) Option { return func(o *options) { o.resolver = r } }

// ClientOption configures one dependency's client.
type ClientOption func(*clientOptions)

type clientOptions struct {
	lb []lb.Option
}

// WithBalancer passes options to the dependency's balancer (policy, outlier ejection, ...).
func WithBalancer(opts ...lb.Option) ClientOption {
	return func(o *clientOptions) { o.lb = append(o.lb, opts...) }
}

// ErrNoResolver is returned by calls through a Client when the Service has no way to find instances.
var ErrNoResolver = errors.New("chassis: no resolver for service names (set DISCOVERY or use WithResolver)")

type dependency struct {
	bal     *lb.Balancer
	release func()
	client  *http.Client
}

// Client returns an *http.Client for calls to another service by name: "http://pricing/prices/42".
// Each attempt picks a healthy instance (P2C peak-EWMA by default, with outlier ejection), and calls
// are traced and measured. Clients are cached by name; the first call fixes the options. The
// balancer follows discovery from Run's start until the Service stops, after the public server has
// drained, so that in-flight handlers can still call out.
func (s *Service) Client(service string, opts ...ClientOption) *http.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.deps[service]; ok {
		return d.client
	}
	var co clientOptions
	for _, o := range opts {
		o(&co)
	}
	d, err := s.newDependency(service, co)
	if err != nil {
		s.log.Error("client unusable", zap.String("service", service), zap.Error(err))
		d = &dependency{client: &http.Client{Transport: errTransport{fmt.Errorf("chassis: client %q: %w", service, err)}}}
	} else if s.clientsStarted {
		if err := d.bal.Start(); err != nil {
			s.log.Error("client start", zap.String("service", service), zap.Error(err))
		}
	}
	s.deps[service] = d
	return d.client
}

func (s *Service) newDependency(service string, co clientOptions) (*dependency, error) {
	if strings.ContainsAny(service, "/:") || service == "" {
		return nil, fmt.Errorf("bad service name %q", service)
	}
	if s.opts.resolver == nil {
		return nil, ErrNoResolver
	}
	w, release, err := s.opts.resolver(service)
	if err != nil {
		return nil, err
	}
	bopts := append([]lb.Option{lb.WithMeterProvider(s.tel.MeterProvider())}, co.lb...)
	bal, err := lb.New(service, w, bopts...)
	if err != nil {
		if release != nil {
			release()
		}
		return nil, err
	}
	rt := s.tel.Transport(lb.NewTransport(bal))
	return &dependency{bal: bal, release: release, client: &http.Client{Transport: rt}}, nil
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
	}
	s.clientsStarted = false
	return errors.Join(errs...)
}

type errTransport struct{ err error }

func (t errTransport) RoundTrip(*http.Request) (*http.Response, error) { return nil, t.err }
