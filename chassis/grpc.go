package chassis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/reflection"

	"github.com/cloudchassis/kit/grpcx"
	"github.com/cloudchassis/kit/guard"
	"github.com/cloudchassis/kit/health"
	"github.com/cloudchassis/kit/lifecycle"
)

// MetaGRPCPort is the Consul service metadata key under which an instance that serves gRPC
// advertises its gRPC port, on the same registration as its HTTP port (grpcx.MetaPort).
const MetaGRPCPort = grpcx.MetaPort

// WithGRPCOptions adds grpc.ServerOptions to the gRPC server that Service.GRPC creates, after the
// chassis' own: grpc.ChainUnaryInterceptor and grpc.ChainStreamInterceptor given here run inside
// the chassis chain, just before the handler (as WithMiddleware's do over HTTP).
func WithGRPCOptions(opts ...grpc.ServerOption) Option {
	return optionFunc(func(o *options) { o.grpc = append(o.grpc, opts...) })
}

// grpcStopWait is how long, after the shutdown deadline cut the calls in progress, Run waits for
// the gRPC server to close its connections.
const grpcStopWait = time.Second

// grpcServer is the service's gRPC server, made by the first call to GRPC.
type grpcServer struct {
	once   sync.Once
	srv    *grpc.Server
	health *grpcx.Health
	chain  *grpcx.Interceptors
	err    error // building the chain failed: Run reports it
	addr   string
	// drained is closed when GracefulStop returned; the "grpc server" hook's Stop starts it, and
	// the "grpc drain" hook's Stop, which runs after the public server's, waits for it.
	drained chan struct{}
	served  bool // Run serves the server: GRPC was called before Run started (set by Run under s.mu)
}

// GRPC returns the service's gRPC server, creating it on the first call. Register services on it
// before Run; Run then serves it on GRPC_PORT, and a service that never calls GRPC opens no gRPC
// port. The server has:
//
//   - the chassis chain of grpcx.Interceptors, in the HTTP chain's order: telemetry, recovery,
//     request id and deadline (GRPC_REQUEST_TIMEOUT), load shedding, mTLS peer identity, bearer
//     tokens (AUTH_*, with AUTH_ROUTE_SCOPES entries named by full method, "/pkg.Service/Method"),
//     rate limiting (RATE_LIMIT_*, RATE_LIMIT_ROUTES by full method); then WithGRPCOptions';
//   - message size limits, stream limit and keepalive policy from GRPC_*;
//   - the TLS of the public HTTP server (TLS_*, mutual TLS included) when it is configured;
//   - grpc.health.v1.Health, which mirrors readiness (/readyz): NOT_SERVING while starting,
//     SERVING when ready, NOT_SERVING from the first moment of the drain;
//   - the reflection service only when GRPC_REFLECTION=true.
//
// On shutdown, in the drain's order: health turns NOT_SERVING with /readyz, the instance
// deregisters, DRAIN_DELAY passes, then GracefulStop waits for calls in progress until
// SHUTDOWN_TIMEOUT's deadline, and Stop cuts what remains. GRPC is safe for concurrent use; a
// server first made after Run started is not served (GRPC logs an error).
func (s *Service) GRPC() *grpc.Server {
	g := &s.grpc
	g.once.Do(func() {
		st := s.settings
		opts := []grpcx.Option{
			grpcx.WithTracerProvider(s.tel.TracerProvider()),
			grpcx.WithMeterProvider(s.tel.MeterProvider()),
			grpcx.WithPropagator(s.tel.Propagator()),
			grpcx.WithLogger(s.tel.Slog()),
			grpcx.WithAccessLog(st.AccessLog, st.AccessLogSample),
			grpcx.WithAccessLogger(s.tel),
			grpcx.WithRequestTimeout(st.ServerConfig.RequestTimeout),
			grpcx.WithShedder(s.shedder),
			grpcx.WithPriorityKey(st.PriorityHeader),
			grpcx.WithMethodPriorities(methodPriorities(st.ShedConfig)),
			grpcx.WithLimiter(s.limiter, st.IPv6Prefix),
			grpcx.WithPeerIdentity(st.TLSConfig.Enabled() && st.ClientCAFile != ""),
		}
		if s.verifier != nil {
			opts = append(opts, grpcx.WithVerifier(s.verifier, st.Optional),
				grpcx.WithMethodScopes(methodScopes(st.RouteScopes)))
		}
		chain, err := grpcx.NewInterceptors(opts...)
		if err != nil {
			err = fmt.Errorf("chassis: gRPC server: %w", err)
			chain, _ = grpcx.NewInterceptors() // a server that works, for a service that fails at Run
		}
		sopts := append(st.ServerConfig.ServerOptions(),
			grpc.ChainUnaryInterceptor(chain.Unary()),
			grpc.ChainStreamInterceptor(chain.Stream()))
		if s.tlsConf != nil {
			sopts = append(sopts, grpc.Creds(credentials.NewTLS(s.tlsConf.TLSConfig())))
		}
		srv := grpc.NewServer(append(sopts, s.opts.grpc...)...)
		hs := grpcx.NewHealth(func(ctx context.Context) bool { return s.health.Check(ctx, health.Readiness).OK() })
		hs.Register(srv)
		if st.ServerConfig.Reflection {
			reflection.Register(srv)
		}
		// Published under s.mu, which Run holds when it decides whether to serve gRPC: either Run
		// sees the server, or GRPC sees that Run started.
		s.mu.Lock()
		late := s.running
		g.chain, g.err, g.srv, g.health = chain, err, srv, hs
		s.mu.Unlock()
		if late {
			s.log.Error("GRPC called after Run: the gRPC server is not served; call GRPC before Run")
		}
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return g.srv
}

// GRPCAddr returns the gRPC server's bound address once Run has bound it, else "" (also when the
// service serves no gRPC).
func (s *Service) GRPCAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grpc.addr
}

// grpcUsed reports whether GRPC was called before Run: only then does Run serve gRPC. Run decides
// it once, under s.mu, when it starts (grpcServed).
func (s *Service) grpcUsed() bool { return s.grpc.served }

// grpcHooks serve the gRPC server. The first goes after the public server: it starts after it and,
// once readiness drained, starts the graceful stop before the public server's shutdown. The second
// goes before the public server and waits for that graceful stop after the public server's
// shutdown: the HTTP and gRPC servers drain at the same time, within the same SHUTDOWN_TIMEOUT,
// instead of one after the other (a long gRPC stream would otherwise spend the whole budget before
// HTTP's shutdown began).
func (s *Service) grpcHooks() (serve, drain lifecycle.Hook) {
	g := &s.grpc
	serve = lifecycle.Hook{
		Name: "grpc server",
		Start: func(ctx context.Context) error {
			ln, err := s.listen(ctx, s.settings.ServerConfig.Port)
			if err != nil {
				return fmt.Errorf("gRPC port: %w", err)
			}
			s.mu.Lock()
			g.addr = ln.Addr().String()
			s.mu.Unlock()
			s.log.Info("gRPC server listening", zap.String("addr", g.addr))
			go func() {
				if err := g.srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
					s.group.Fail(fmt.Errorf("gRPC server: %w", err))
				}
			}()
			return nil
		},
		Stop: func(context.Context) error {
			g.health.Close() // Watch streams would hold GracefulStop until the deadline
			g.drained = make(chan struct{})
			go func() {
				g.srv.GracefulStop()
				close(g.drained)
			}()
			return nil
		},
	}
	drain = lifecycle.Hook{
		Name: "grpc drain",
		Stop: func(ctx context.Context) error {
			if g.drained == nil { // the server never started
				return nil
			}
			select {
			case <-g.drained:
				return nil
			case <-ctx.Done():
				// Stop closes every connection, which cancels the calls' contexts; it does not wait
				// for handlers, nor do we: one that ignores its context keeps running, as with
				// net/http's Shutdown, and GracefulStop's goroutine ends when the last one returns.
				// Stop waits for GracefulStop's lock, which GracefulStop holds while it waits for
				// handlers: it runs on its own, and Run waits for it at most grpcStopWait.
				stopped := make(chan struct{})
				go func() {
					g.srv.Stop()
					close(stopped)
				}()
				t := time.NewTimer(grpcStopWait)
				defer t.Stop()
				select {
				case <-stopped:
				case <-g.drained:
				case <-t.C:
					s.log.Warn("gRPC handlers still running after Stop: they ignore their context's cancellation")
				}
				err := fmt.Errorf("gRPC calls in progress cut at shutdown deadline: %w", ctx.Err())
				s.log.Warn("gRPC calls in progress cut at shutdown deadline", zap.Error(ctx.Err()))
				return err
			}
		},
	}
	return serve, drain
}

// grpcReadinessChanged tells the gRPC health service's watchers that readiness changed.
func (s *Service) grpcReadinessChanged() {
	if s.grpc.served {
		s.grpc.health.Update()
	}
}

// grpcPort returns the bound gRPC port for the registration's metadata, or "".
func (s *Service) grpcPort() string {
	if _, port, err := net.SplitHostPort(s.GRPCAddr()); err == nil {
		return port
	}
	return ""
}

// methodPriorities picks the gRPC methods ("/pkg.Service/Method") out of SHED_CRITICAL_ROUTES and
// SHED_SHEDDABLE_ROUTES.
func methodPriorities(c guard.ShedConfig) map[string]guard.Priority {
	m := map[string]guard.Priority{}
	for _, r := range c.SheddableRoutes {
		if isMethodName(r) {
			m[r] = guard.PrioritySheddable
		}
	}
	for _, r := range c.CriticalRoutes {
		if isMethodName(r) {
			m[r] = guard.PriorityCritical
		}
	}
	return m
}

// methodScopes picks the gRPC methods out of AUTH_ROUTE_SCOPES.
func methodScopes(rs map[string][]string) map[string][]string {
	m := map[string][]string{}
	for r, scopes := range rs {
		if isMethodName(r) {
			m[r] = scopes
		}
	}
	return m
}

// isMethodName tells a full gRPC method name ("/pkg.Service/Method") from an HTTP route pattern
// ("GET /items/{id}", "/items/{id}"): the service part of a method name has a dot and no braces.
func isMethodName(r string) bool {
	svc, m := grpcx.SplitMethod(r)
	return strings.HasPrefix(r, "/") && m != "" && strings.Contains(svc, ".") &&
		!strings.ContainsAny(r, "{} ") && strings.Count(r, "/") == 2
}
