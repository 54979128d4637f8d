package chassis

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// GRPCConfig holds the gRPC-only settings of a dependency, read with the prefix CLIENT_<NAME>_
// beside resilience.Config and TransportConfig, which apply to gRPC clients too.
type GRPCConfig struct {
	Port       int      `envconfig:"GRPC_PORT" default:"0" validate:"gte=0,lte=65535" desc:"gRPC port dialled on every instance of the dependency; 0 uses each instance's grpc_port metadata (Consul service meta), else its registered port. Set it with DISCOVERY_STATIC_<NAME> lists of HTTP addresses"`
	Idempotent []string `envconfig:"GRPC_IDEMPOTENT" desc:"full gRPC method names safe to retry and hedge, comma-separated (/shop.Pricing/Get,/shop.Pricing/List); methods whose proto sets idempotency_level are idempotent without it"`
}

// WithGRPC passes options to a gRPC dependency's client (GRPCClient): dial options, per-attempt
// interceptors, idempotent methods declared in code, a classifier (grpcclient.WithClassifier).
// They come after the settings chassis derives from the environment: grpcclient.WithResilience
// here would replace CLIENT_<NAME>_* (use WithResilience, which layers under them). Client ignores
// them.
func WithGRPC(opts ...grpcclient.Option) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.grpc = append(o.grpc, opts...) })
}

type grpcDependency struct {
	client  *grpcclient.Client // nil when the dependency is unusable
	conn    *grpc.ClientConn   // the client's, or one that fails every call
	release func()
}

// GRPCClient returns a *grpc.ClientConn to another service by name, for generated clients:
// pricingpb.NewPricingClient(svc.GRPCClient("pricing")).
//
// Its instances come from the same discovery as Client's (DISCOVERY_STATIC_<NAME>, or Consul
// through the watch the process shares per service), dialled at their grpc_port metadata
// (CLIENT_<NAME>_GRPC_PORT overrides it). Calls go through the same chain as Client's: span and
// rpc.client.call.duration; the dependency's breaker; overall timeout (CLIENT_<NAME>_TIMEOUT, or the
// caller's deadline if sooner); retries under the retry budget and hedging, for idempotent methods
// only (CLIENT_<NAME>_GRPC_IDEMPOTENT, WithGRPC(grpcclient.WithIdempotent), a proto
// idempotency_level, or resilience.MarkRetryable); a pick per attempt by the balancing policy (P2C
// peak-EWMA unless LB_POLICY or CLIENT_<NAME>_LB_POLICY names another) among the connected
// instances, outlier ejection; the instance's breaker; attempt timeout; bulkhead. gRPC codes are
// read through the classifier as the HTTP statuses of docs/grpc.md#clients, so CLIENT_<NAME>_RETRY_ON
// and resilience.WithClassifier apply. The request id goes out as x-request-id metadata and the
// trace context as traceparent. TLS comes from CLIENT_TLS_* and CLIENT_<NAME>_TLS_* as for Client,
// with certificates reloaded on rotation.
//
// Connections are cached by name: the first call fixes the options. As with Client, problems of a
// dependency declared before Run make Run fail before anything starts; after, its calls fail with
// UNAVAILABLE. The connection follows discovery from Run's start and is closed when the Service
// stops, after the public server has drained.
func (s *Service) GRPCClient(service string, opts ...ClientOption) *grpc.ClientConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.grpcDeps[service]; ok {
		return d.conn
	}
	if s.grpcDeps == nil {
		s.grpcDeps = map[string]*grpcDependency{}
	}
	var co clientOptions
	if s.opts.clientDefaults != nil {
		opts = append(s.opts.clientDefaults(service), opts...)
	}
	for _, o := range opts {
		o.apply(&co)
	}
	d, err := s.newGRPCDependency(service, co)
	if err != nil {
		if s.running {
			err = fmt.Errorf("chassis: grpc client %q: %w", service, err)
			s.log.Error("grpc client unusable", zap.String(semconv.AttrPeerService, service), zap.Error(err))
		} else {
			problems, fails := partitionProblems(err)
			s.clientErrs = append(s.clientErrs, problems...)
			for _, f := range fails {
				s.clientFails = append(s.clientFails, fmt.Errorf("chassis: grpc client %q: %w", service, f))
			}
			err = fmt.Errorf("chassis: grpc client %q: %w", service, err)
		}
		d = &grpcDependency{conn: failingConn(err)}
	} else if s.grpcStarted {
		if err := d.client.Start(); err != nil {
			s.log.Error("grpc client start", zap.String(semconv.AttrPeerService, service), zap.Error(err))
		}
	}
	s.grpcDeps[service] = d
	return d.conn
}

func (s *Service) newGRPCDependency(service string, co clientOptions) (*grpcDependency, error) {
	if strings.ContainsAny(service, "/:") || service == "" {
		return nil, fmt.Errorf("bad service name %q", service)
	}
	rc, tc, err := s.dependencyConfig(service, co)
	var gc GRPCConfig
	if gerr := config.Load(&gc, config.WithStrictPrefix(ClientPrefix(service)), config.WithoutDefaults(),
		config.WithLookup(s.opts.lookup)); gerr != nil {
		err = errors.Join(err, gerr)
	}
	if err != nil {
		return nil, errors.Join(err, s.probeResolver(service))
	}
	if s.opts.resolver == nil {
		return nil, noResolver(service)
	}
	creds, err := grpcCredentials(service, tc)
	if err != nil {
		return nil, &config.Error{Problems: []config.Problem{{Err: fmt.Errorf("%s_TLS_*: %w", ClientPrefix(service), err)}}}
	}
	w, release, err := s.opts.resolver(service)
	if err != nil {
		return nil, err
	}
	gopts := append([]grpcclient.Option{
		grpcclient.WithResilience(rc),
		grpcclient.WithBalancer(s.balancerOptions(co, tc)...),
		grpcclient.WithIdempotent(gc.Idempotent...),
		grpcclient.WithPort(gc.Port),
		grpcclient.WithMeterProvider(s.tel.MeterProvider()),
		grpcclient.WithTracerProvider(s.tel.TracerProvider()),
		grpcclient.WithPropagator(s.tel.Propagator()),
		grpcclient.WithRequestID(RequestID),
		grpcclient.WithDialOptions(grpc.WithTransportCredentials(creds)),
	}, co.grpc...)
	if tc.DialTimeout > 0 {
		cp := grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: tc.DialTimeout}
		gopts = append(gopts, grpcclient.WithDialOptions(grpc.WithConnectParams(cp)))
	}
	c, err := grpcclient.New(service, w, gopts...)
	if err != nil {
		if release != nil {
			release()
		}
		return nil, err
	}
	return &grpcDependency{client: c, conn: c.Conn(), release: release}, nil
}

// grpcCredentials returns the transport credentials of a dependency: TLS from its settings, with the
// CAs and client certificate reloaded on rotation, or none.
func grpcCredentials(service string, tc TransportConfig) (credentials.TransportCredentials, error) {
	if !tc.TLS.Enabled {
		return insecure.NewCredentials(), nil
	}
	r, err := auth.NewClientReloader(tc.TLS)
	if err != nil {
		return nil, err
	}
	return &reloadingCreds{r: r, serverName: cmp.Or(tc.TLS.ServerName, service)}, nil
}

// reloadingCreds is credentials.NewTLS with a fresh tls.Config per connection from an
// auth.ClientReloader, so that rotated certificates apply to new connections without a restart.
type reloadingCreds struct {
	r          *auth.ClientReloader
	serverName string
}

func (c *reloadingCreds) ClientHandshake(ctx context.Context, _ string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn := tls.Client(raw, c.r.Config(c.serverName, "h2"))
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, credentials.TLSInfo{State: conn.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (c *reloadingCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("chassis: client credentials cannot serve")
}

func (c *reloadingCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", ServerName: c.serverName}
}

func (c *reloadingCreds) Clone() credentials.TransportCredentials {
	return &reloadingCreds{r: c.r, serverName: c.serverName}
}

func (c *reloadingCreds) OverrideServerName(name string) error { c.serverName = name; return nil }

// failingConn is the connection of an unusable dependency: every call fails with UNAVAILABLE and
// err. It dials nothing.
func failingConn(err error) *grpc.ClientConn {
	fail := func() error { return status.Error(codes.Unavailable, err.Error()) }
	conn, cerr := grpc.NewClient("passthrough:///unusable",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(context.Context, string, any, any, *grpc.ClientConn, grpc.UnaryInvoker, ...grpc.CallOption) error {
			return fail()
		}),
		grpc.WithStreamInterceptor(func(context.Context, *grpc.StreamDesc, *grpc.ClientConn, string, grpc.Streamer, ...grpc.CallOption) (grpc.ClientStream, error) {
			return nil, fail()
		}))
	if cerr != nil {
		panic(cerr) // a passthrough target with insecure credentials always parses
	}
	return conn
}

// startGRPCClients starts the gRPC clients when Run starts; stopGRPCClients closes them when it
// stops, after the public servers drained.
func (s *Service) startGRPCClients(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grpcStarted = true
	for name, d := range s.grpcDeps {
		if d.client == nil {
			continue
		}
		if err := d.client.Start(); err != nil {
			return fmt.Errorf("grpc client %q: %w", name, err)
		}
	}
	return nil
}

func (s *Service) stopGRPCClients(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for name, d := range s.grpcDeps {
		if d.client != nil {
			if err := d.client.Close(); err != nil {
				errs = append(errs, fmt.Errorf("grpc client %q: %w", name, err))
			}
		} else {
			_ = d.conn.Close()
		}
		if d.release != nil {
			d.release()
		}
	}
	s.grpcDeps = nil
	s.grpcStarted = false
	return errors.Join(errs...)
}
