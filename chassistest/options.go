package chassistest

import (
	"io"
	"maps"
	"time"

	"github.com/cloudchassis/kit/chassis"
)

// DefaultReadyTimeout bounds how long Start waits for a service to become ready.
const DefaultReadyTimeout = 15 * time.Second

// BaseEnv is the environment every service starts with, under the test's own WithEnv values: both
// servers on 127.0.0.1 with ephemeral ports, no drain delay, debug logs (recorded in memory, printed
// only if the test fails), every span sampled, no exporter but the in-memory ones and the admin port's
// Prometheus endpoint.
func BaseEnv() map[string]string {
	return map[string]string{
		"HOST":                 "127.0.0.1",
		"PORT":                 "0",
		"ADMIN_PORT":           "0",
		"GRPC_PORT":            "0", // served only by services that use svc.GRPC()
		"DRAIN_DELAY":          "0s",
		"SHUTDOWN_TIMEOUT":     "10s",
		"LOG_LEVEL":            "debug",
		"LOG_FORMAT":           "json",
		"DISCOVERY":            "static", // Client goes through the cluster's resolver, never to Consul
		"OTEL_TRACES_SAMPLER":  "always_on",
		"OTEL_TRACES_EXPORTER": "none",
		"OTEL_LOGS_EXPORTER":   "none",
	}
}

// An Option configures Start and Cluster.Start. Options given to NewCluster apply to every service
// started in the cluster, before the service's own.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	env          map[string]string
	chassis      []chassis.Option
	inMemory     bool
	leakCheck    bool
	readyTimeout time.Duration
	logOutput    io.Writer
}

func newOptions(opts ...[]Option) options {
	o := options{env: map[string]string{}, leakCheck: true, readyTimeout: DefaultReadyTimeout}
	for _, list := range opts {
		for _, opt := range list {
			opt.apply(&o)
		}
	}
	return o
}

// WithEnv sets environment variables of the service (its chassis settings and its WithConfig
// structs), over BaseEnv. The service never sees the process environment. Later values win.
func WithEnv(env map[string]string) Option {
	env = maps.Clone(env)
	return optionFunc(func(o *options) { maps.Copy(o.env, env) })
}

// WithConfig loads the service's own config struct, as chassis.WithConfig does in main.
func WithConfig(spec any) Option { return WithChassisOptions(chassis.WithConfig(spec)) }

// WithChassisOptions passes options to chassis.New after chassistest's own, so they win (a
// WithResolver here replaces the cluster's registry, say).
func WithChassisOptions(opts ...chassis.Option) Option {
	return optionFunc(func(o *options) { o.chassis = append(o.chassis, opts...) })
}

// InMemory serves the requests of Instance.Client, Get and Do, and the calls other in-memory services
// of the cluster make to this one, by calling the service's handler in memory (HandlerTransport)
// rather than over loopback sockets. The service still runs on its ports (the admin endpoints and the
// registration stay as they are), but the request path has no socket, so a test inside a
// testing/synctest bubble runs on the bubble's clock. Start the services outside the bubble and make
// the requests inside it.
func InMemory() Option { return optionFunc(func(o *options) { o.inMemory = true }) }

// WithoutLeakCheck turns off the goroutine leak check that runs when the cluster's services have
// stopped. Use it in parallel tests (t.Parallel), whose goroutines the check would see, and rely on
// goleak.VerifyTestMain in TestMain instead.
func WithoutLeakCheck() Option { return optionFunc(func(o *options) { o.leakCheck = false }) }

// WithReadyTimeout changes DefaultReadyTimeout.
func WithReadyTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) { o.readyTimeout = d })
}

// WithLogOutput copies the service's JSON log lines to w as well (os.Stderr while debugging, say).
// By default they are kept in memory and printed through the test's log only if the test fails.
func WithLogOutput(w io.Writer) Option { return optionFunc(func(o *options) { o.logOutput = w }) }
