package chassis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/guard"
	"github.com/cloudchassis/kit/health"
	"github.com/cloudchassis/kit/lifecycle"
	"github.com/cloudchassis/kit/telemetry"
)

// Middleware wraps a handler.
type Middleware func(http.Handler) http.Handler

// Option configures New.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	lookup         config.Lookup
	lookupSet      bool
	environ        func() []string
	environSet     bool
	userConfig     []any
	signals        bool
	version        string
	logOutput      interface{ Write([]byte) (int, error) }
	middleware     []Middleware
	registrar      func(*Service) (discovery.Registrar, error)
	resolver       Resolver
	clientDefaults func(service string) []ClientOption
	telemetry      []telemetry.Option
	forceExit      func(int)
	startChecks    time.Duration
	grpc           []grpc.ServerOption
}

// WithConfig loads the service's own config struct from the same environment as the chassis
// settings. Problems in both are reported together. spec must be a pointer to a struct; see package
// config for the tags.
func WithConfig(spec any) Option {
	return optionFunc(func(o *options) { o.userConfig = append(o.userConfig, spec) })
}

// WithEnv reads the environment through lookup instead of os.LookupEnv, so that tests can run several
// services with different settings in one process. Add WithEnviron to keep the checks that list the
// environment (CLIENT_<NAME>_*, DISCOVERY_STATIC_<NAME>).
func WithEnv(lookup config.Lookup) Option {
	return optionFunc(func(o *options) { o.lookup, o.lookupSet = lookup, true })
}

// WithVersion sets the version reported in telemetry and /debug/info when SERVICE_VERSION is unset.
// Without it the main module's version from the build info is used.
func WithVersion(v string) Option { return optionFunc(func(o *options) { o.version = v }) }

// WithoutSignals stops Run from handling SIGINT and SIGTERM itself; cancel Run's context instead.
// Tests and programs that run several services in one process use it.
func WithoutSignals() Option { return optionFunc(func(o *options) { o.signals = false }) }

// WithLogOutput sends logs to w instead of standard output.
func WithLogOutput(w interface{ Write([]byte) (int, error) }) Option {
	return optionFunc(func(o *options) { o.logOutput = w })
}

// WithMiddleware adds middleware to every public route, innermost: after all of the chassis' own
// (telemetry, recovery, request id, limits, deadline, body gate, shedding, authentication, rate
// limiting), just before the handler. The first one given runs first.
func WithMiddleware(m ...Middleware) Option {
	return optionFunc(func(o *options) { o.middleware = append(o.middleware, m...) })
}

// WithRegistrar announces the instance once it is ready and withdraws it at the start of the drain.
// The function is called in Run, once the listeners are bound, so that it can use the actual ports.
func WithRegistrar(f func(*Service) (discovery.Registrar, error)) Option {
	return optionFunc(func(o *options) { o.registrar = f })
}

// WithTelemetryOptions passes options to telemetry.New (exporters and providers for tests, say).
func WithTelemetryOptions(opts ...telemetry.Option) Option {
	return optionFunc(func(o *options) { o.telemetry = append(o.telemetry, opts...) })
}

// Service is one running microservice. Its methods are safe for concurrent use; Handle, OnStart,
// OnStop and AddCheck must be called before Run.
type Service struct {
	name     string
	settings Settings
	opts     options
	started  time.Time

	tel     *telemetry.Telemetry
	log     *zap.Logger
	health  *health.Checker
	group   *lifecycle.Group
	mux     *http.ServeMux
	probe   *http.ServeMux // the same patterns, no-op handlers: answers 404 or 405 for unmatched requests
	unmatch sync.Once      // installs the instrumented catch-all on mux
	public  *http.Server
	admin   *http.Server
	routes  []string
	hooks   []lifecycle.Hook
	tasks   []task // admin tasks (Task), run by RunTask instead of Run
	inTask  bool   // RunTask, not Run, is running the service
	userCfg []any

	mu        sync.Mutex
	addr      string
	adminAddr string
	ready     chan struct{}
	running   bool

	deps           map[string]*dependency
	clientsStarted bool
	closers        []lifecycle.Hook // stop after the clients (the Consul registry)
	static         sync.Map         // service -> instances listed in DISCOVERY_STATIC_<SERVICE>

	grpcDeps    map[string]*grpcDependency // GRPCClient's, by name (chassis/grpcclient.go)
	grpcStarted bool
	grpc        grpcServer // the gRPC server, once GRPC was called

	drains      []lifecycle.Hook
	adminRoutes []adminRoute
	consul      *api.Client
	etcd        *clientv3.Client // DISCOVERY=etcd (chassis/discovery_etcd.go)

	shedder  *guard.Shedder  // nil when SHED_ENABLED=false
	bodies   *guard.BodyGate // nil when HTTP_BODY_BUFFER_BYTES=0
	limiter  *guard.Limiter  // nil until RATE_LIMIT_RPS is set
	verifier *auth.Verifier  // nil unless AUTH_JWKS_URL or AUTH_JWKS_FILE is set
	jwks     *auth.JWKS      // refreshed in the background while running
	tlsConf  *auth.Reloader  // nil unless TLS_CERT_FILE is set

	scan        *envScan         // the CLIENT_* and DISCOVERY_STATIC_* variables New found
	clientErrs  []config.Problem // configuration problems of clients declared before Run, reported by Run
	clientFails []error          // other failures of clients declared before Run, reported by Run
}

// New reads the environment and builds a Service. A *config.Error lists every bad or missing
// variable, whatever its group: the chassis settings, the WithConfig structs, OTEL_*, CONSUL_* (with
// consul discovery) and, when another problem fails New, the CLIENT_<NAME>_* and
// DISCOVERY_STATIC_<NAME> variables present; pass it to Exit for exit code 2. Problems of
// dependencies alone are reported by Run, which knows which dependencies Client declared.
func New(name string, opts ...Option) (*Service, error) {
	o := options{lookup: os.LookupEnv, signals: true, forceExit: os.Exit, logOutput: os.Stdout}
	for _, opt := range opts {
		opt.apply(&o)
	}
	o.environ = defaultEnviron(&o)
	s := &Service{name: name, opts: o, started: time.Now(), ready: make(chan struct{}), userCfg: o.userConfig,
		deps: map[string]*dependency{}}
	if err := s.checkEnvironment(); err != nil {
		return nil, err
	}
	if s.settings.Name != "" {
		s.name = s.settings.Name
	}
	if s.name == "" {
		return nil, errors.New("chassis: a service needs a name (chassis.New's argument or SERVICE_NAME)")
	}
	if s.settings.Version == "" {
		s.settings.Version = o.version
	}
	if s.settings.Version == "" {
		s.settings.Version = buildVersion()
	}

	tel, err := telemetry.New(context.Background(), telemetry.Settings{
		ServiceName:            s.name,
		ServiceVersion:         s.settings.Version,
		InstanceID:             instanceID(),
		LogLevel:               s.settings.LogLevel,
		LogFormat:              s.settings.LogFormat,
		AccessLog:              s.settings.AccessLog,
		AccessLogSuccessSample: s.settings.AccessLogSample,
		LogBuffer:              int(s.settings.LogBuffer),
		Lookup:                 o.lookup,
		LogOutput:              o.logOutput,
	}, o.telemetry...)
	if err != nil {
		return nil, telemetryError(err)
	}
	s.tel = tel
	s.log = tel.Logger()
	s.health = health.New()
	s.mux = http.NewServeMux()
	s.probe = http.NewServeMux()
	gopts := []lifecycle.Option{
		lifecycle.WithStartTimeout(s.settings.StartTimeout),
		lifecycle.WithStopTimeout(s.settings.ShutdownTimeout),
		lifecycle.WithObserver(s.observe),
		lifecycle.WithForceExit(o.forceExit),
	}
	if o.signals {
		gopts = append(gopts, lifecycle.WithSignals())
	}
	s.group = lifecycle.New(gopts...)
	if err := errors.Join(s.setupDiscovery(), s.setupProtection()); err != nil {
		s.release(context.Background()) // what setupDiscovery built (an etcd client) and telemetry
		return nil, err
	}
	return s, nil
}

// loadConfig loads the chassis settings and the WithConfig structs, adding their problems to all.
// The error is for anything else (a spec that is not a pointer to a struct).
func (s *Service) loadConfig(all *config.Error) error {
	copts := []config.Option{config.WithLookup(s.opts.lookup)}
	collect := func(err error) error {
		var ce *config.Error
		if errors.As(err, &ce) {
			all.Problems = append(all.Problems, ce.Problems...)
			return nil
		}
		return err
	}
	if err := collect(config.Load(&s.settings, copts...)); err != nil {
		return err
	}
	for _, spec := range s.opts.userConfig {
		if err := collect(config.Load(spec, copts...)); err != nil {
			return fmt.Errorf("chassis: WithConfig: %w", err)
		}
	}
	return nil
}

// Name returns the service name.
func (s *Service) Name() string { return s.name }

// Settings returns the chassis settings read from the environment.
func (s *Service) Settings() Settings { return s.settings }

// Logger returns the service's logger. For request-scoped logs with trace ids use LoggerFor.
func (s *Service) Logger() *zap.Logger { return s.log }

// LoggerFor returns a logger that carries the trace and span ids of the span in ctx.
func (s *Service) LoggerFor(ctx context.Context) *zap.Logger { return s.tel.For(ctx) }

// Slog returns a *slog.Logger writing through the same logger, for libraries that log with slog.
func (s *Service) Slog() *slog.Logger { return s.tel.Slog() }

// Telemetry returns the service's telemetry: tracer and meter providers, propagator, instrumentation.
func (s *Service) Telemetry() *telemetry.Telemetry { return s.tel }

// Health returns the service's health checker.
func (s *Service) Health() *health.Checker { return s.health }

// AddCheck adds a health check to a probe (health.Liveness, health.Readiness or health.Startup).
func (s *Service) AddCheck(kind health.Kind, c health.Check) { s.health.Add(kind, c) }

// OnStart adds a start hook; hooks start in the order added, after the admin server and before the
// public server, and stop in reverse order after the public server has drained.
func (s *Service) OnStart(name string, start func(ctx context.Context) error) {
	s.hooks = append(s.hooks, lifecycle.Hook{Name: name, Start: start})
}

// OnStop adds a stop hook (see OnStart for the order).
func (s *Service) OnStop(name string, stop func(ctx context.Context) error) {
	s.hooks = append(s.hooks, lifecycle.Hook{Name: name, Stop: stop})
}

// OnDrain adds a function that runs at the start of the drain, right after readiness turns 503 and
// the instance is deregistered, while requests are still served: the place to step down as a leader
// (coordination/election's Stop) or to stop taking work from a queue. Drain functions run in the
// order added, under the shutdown deadline; their errors are joined into Run's.
func (s *Service) OnDrain(name string, f func(ctx context.Context) error) {
	s.drains = append(s.drains, lifecycle.Hook{Name: name, Stop: f})
}

// HandleAdmin registers a handler on the admin server (for example coordination/dynconfig's
// /debug/config). It is a debug endpoint: only the peers ADMIN_DEBUG allows reach it (loopback by
// default). Call it before Run.
func (s *Service) HandleAdmin(pattern string, h http.Handler) {
	s.adminRoutes = append(s.adminRoutes, adminRoute{pattern, h})
}

type adminRoute struct {
	pattern string
	h       http.Handler
}

// Consul returns the Consul API client built from CONSUL_HTTP_ADDR and the other standard variables
// when DISCOVERY is consul, else nil. Coordination (dynamic config, locks, elections) uses it.
func (s *Service) Consul() *api.Client { return s.consul }

// Hook adds a start/stop pair that stops only if it started.
func (s *Service) Hook(h lifecycle.Hook) { s.hooks = append(s.hooks, h) }

// Addr returns the public server's bound address once Run has bound it, else "".
func (s *Service) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// AdminAddr returns the admin server's bound address once Run has bound it, else "".
func (s *Service) AdminAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.adminAddr
}

// Ready is closed when the service is ready: listeners bound, start hooks done, startup checks passed.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Run starts the service and blocks until ctx is done, SIGINT/SIGTERM arrives (unless
// WithoutSignals), or a server fails; then it shuts down in order. It returns nil after a clean stop,
// and lifecycle.ErrAlreadyRun when called a second time.
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return lifecycle.ErrAlreadyRun
	}
	s.running = true
	s.grpc.served = s.grpc.srv != nil // GRPC publishes the server under s.mu: see GRPC
	err := s.runProblems()
	if err == nil && s.grpc.served {
		err = s.grpc.err
	}
	s.mu.Unlock()
	if err != nil {
		// Nothing started: free what New built. The error is not logged here; Exit (or Main)
		// prints it, once.
		s.release(ctx)
		return err
	}

	s.public = s.newPublicServer()
	s.admin = s.newAdminServer()

	var registrar discovery.Registrar
	s.group.Append(
		lifecycle.Hook{Name: "telemetry", Stop: s.tel.Shutdown},
		lifecycle.Hook{
			Name: "admin server",
			Start: func(ctx context.Context) error {
				ln, err := s.listen(ctx, s.settings.AdminPort)
				if err != nil {
					return fmt.Errorf("admin port: %w", err)
				}
				s.setAddr(nil, ln)
				s.serve(s.admin, ln, "admin")
				return nil
			},
			Stop: s.admin.Shutdown,
		},
	)
	// Clients stop after the public server drained: in-flight handlers may still call out.
	s.group.Append(s.closers...)
	s.group.Append(lifecycle.Hook{Name: "clients", Start: s.startClients, Stop: s.stopClients},
		lifecycle.Hook{Name: "grpc clients", Start: s.startGRPCClients, Stop: s.stopGRPCClients}, s.jwksHook())
	s.group.Append(s.hooks...)
	grpcServe, grpcDrain := s.grpcHooks()
	if s.grpcUsed() {
		s.group.Append(grpcDrain) // stops after the public server: waits for the gRPC drain
	}
	s.group.Append(
		lifecycle.Hook{
			Name: "public server",
			Start: func(ctx context.Context) error {
				ln, err := s.listen(ctx, s.settings.Port)
				if err != nil {
					return fmt.Errorf("public port: %w", err)
				}
				s.setAddr(ln, nil)
				if s.tlsConf != nil {
					s.public.TLSConfig = s.tlsConf.TLSConfig()
					ln = tls.NewListener(ln, s.public.TLSConfig)
				}
				s.serve(s.public, ln, "public")
				return nil
			},
			Stop: func(ctx context.Context) error {
				// Shutdown closes the listener, then waits for in-flight requests.
				err := s.public.Shutdown(ctx)
				if err != nil {
					s.log.Warn("in-flight requests cut at shutdown deadline", zap.Error(err))
				}
				return err
			},
		},
	)
	if s.grpcUsed() {
		s.group.Append(grpcServe)
	}
	s.group.Append(
		lifecycle.Hook{
			Name: "readiness",
			Start: func(ctx context.Context) error {
				if err := s.awaitStartupChecks(ctx); err != nil {
					return err
				}
				s.health.MarkStarted()
				s.grpcReadinessChanged()
				if s.opts.registrar != nil {
					r, err := s.opts.registrar(s)
					if err != nil {
						return fmt.Errorf("registrar: %w", err)
					}
					if err := r.Register(ctx); err != nil {
						return fmt.Errorf("register: %w", err)
					}
					registrar = r
				}
				s.log.Info("ready",
					zap.String("addr", s.Addr()), zap.String("admin_addr", s.AdminAddr()), zap.String("grpc_addr", s.GRPCAddr()),
					zap.Duration("startup", time.Since(s.started)))
				_ = s.log.Sync() // the line is out of LOG_BUFFER: whoever watches the output sees it now
				close(s.ready)   // after the log line, so that whoever waits on Ready can find it
				return nil
			},
			Stop: func(ctx context.Context) error {
				// The drain, in the order that loses no request: stop advertising readiness and
				// withdraw from the registry first, keep serving while the news propagates, and only
				// then let the public server's Stop close the listener.
				s.health.MarkDraining()
				s.grpcReadinessChanged()             // gRPC health turns NOT_SERVING with /readyz
				s.public.SetKeepAlivesEnabled(false) // responses now say Connection: close
				var err error
				if registrar != nil {
					if err = registrar.Deregister(ctx); err != nil {
						err = fmt.Errorf("deregister: %w", err)
						s.log.Warn("deregistration failed; watchers drop the instance when its check fails", zap.Error(err))
					}
				}
				for _, d := range s.drains {
					if derr := d.Stop(ctx); derr != nil {
						s.log.Warn("drain hook failed", zap.String("hook", d.Name), zap.Error(derr))
						err = errors.Join(err, fmt.Errorf("drain %s: %w", d.Name, derr))
					}
				}
				s.log.Info("draining", zap.Duration("drain_delay", s.settings.DrainDelay))
				t := time.NewTimer(s.settings.DrainDelay)
				defer t.Stop()
				select {
				case <-t.C:
				case <-ctx.Done():
				}
				return err
			},
		},
	)
	err = s.group.Run(ctx)
	if err != nil {
		s.log.Error("stopped with error", zap.Error(err))
	} else {
		s.log.Info("stopped", zap.Duration("uptime", time.Since(s.started)))
	}
	_ = s.log.Sync()
	return err
}

func (s *Service) listen(ctx context.Context, port int) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", net.JoinHostPort(s.settings.Host, strconv.Itoa(port)))
}

func (s *Service) setAddr(public, admin net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if public != nil {
		s.addr = public.Addr().String()
		s.log.Info("public server listening", zap.String("addr", s.addr))
	}
	if admin != nil {
		s.adminAddr = admin.Addr().String()
		s.log.Info("admin server listening", zap.String("addr", s.adminAddr))
	}
}

// serve runs srv on ln in a goroutine that ends when srv is shut down; any other end of Serve fails
// the service.
func (s *Service) serve(srv *http.Server, ln net.Listener, which string) {
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.group.Fail(fmt.Errorf("%s server: %w", which, err))
		}
	}()
}

// awaitStartupChecks runs the startup checks until they pass, backing off from 50 ms to 1 s.
func (s *Service) awaitStartupChecks(ctx context.Context) error {
	wait := 50 * time.Millisecond
	for {
		rep := s.health.RunStartup(ctx)
		if rep.OK() {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("startup checks did not pass: %v: %w", failing(rep), ctx.Err())
		case <-t.C:
		}
		wait = min(wait*2, time.Second)
	}
}

func failing(r health.Report) map[string]string {
	out := map[string]string{}
	for name, c := range r.Checks {
		if c.Status == health.StatusFail {
			out[name] = c.Error
		}
	}
	return out
}

func (s *Service) observe(e lifecycle.Event) {
	switch {
	case e.Phase == "shutdown":
		var se *lifecycle.SignalError
		switch {
		case errors.As(e.Err, &se):
			s.log.Info("shutting down", zap.String("signal", se.Signal.String()))
		case e.Err != nil && !errors.Is(e.Err, context.Canceled):
			s.log.Warn("shutting down", zap.Error(e.Err))
		default:
			s.log.Info("shutting down")
		}
	case e.Err != nil:
		s.log.Error(e.Phase+" failed", zap.String("hook", e.Hook), zap.Duration("took", e.Duration), zap.Error(e.Err))
	default:
		s.log.Debug(e.Phase, zap.String("hook", e.Hook), zap.Duration("took", e.Duration))
	}
}

func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func instanceID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), randomHex(4))
}

// telemetryError turns bad OTEL_* variables into a *config.Error, so that they exit with code 2 like
// every other configuration problem. (New checks them before, with the other groups; this catches
// what only telemetry.New finds.)
func telemetryError(err error) error {
	if p := envProblems(err); len(p) > 0 {
		return &config.Error{Problems: p}
	}
	return fmt.Errorf("chassis: telemetry: %w", err)
}
