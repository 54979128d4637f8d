package chassis

import (
	"errors"
	"strconv"
	"time"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/discovery/etcd"
	"github.com/cloudchassis/kit/grpcx"
	"github.com/cloudchassis/kit/guard"
)

// Settings are the chassis' own environment variables. Every field can be set in the environment;
// New reads them with the same Lookup as the service's config.
type Settings struct {
	Name    string `envconfig:"SERVICE_NAME" desc:"service name; defaults to the name given to chassis.New"`
	Version string `envconfig:"SERVICE_VERSION" desc:"service version; defaults to the module version in the build info"`

	Host      string `envconfig:"HOST" desc:"bind address of both servers; empty means all interfaces"`
	Port      int    `envconfig:"PORT" default:"8080" validate:"min=0,max=65535" desc:"public HTTP port; 0 picks a free port"`
	AdminPort int    `envconfig:"ADMIN_PORT" default:"9090" validate:"min=0,max=65535" desc:"admin port: health, metrics, pprof, info; 0 picks a free port"`

	StartTimeout    time.Duration `envconfig:"START_TIMEOUT" default:"60s" validate:"gt=0" desc:"limit for all start hooks and startup checks"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"30s" validate:"gt=0" desc:"limit for the whole shutdown: drain, in-flight requests, stop hooks, telemetry flush"`
	DrainDelay      time.Duration `envconfig:"DRAIN_DELAY" default:"5s" validate:"gte=0" desc:"how long to keep serving after readiness turns 503 and deregistration, so that load balancers stop sending"`

	ReadHeaderTimeout time.Duration   `envconfig:"HTTP_READ_HEADER_TIMEOUT" default:"5s" validate:"gt=0" desc:"time to read request headers (slowloris guard)"`
	ReadTimeout       time.Duration   `envconfig:"HTTP_READ_TIMEOUT" default:"30s" validate:"gte=0" desc:"time to read a whole request, body included"`
	WriteTimeout      time.Duration   `envconfig:"HTTP_WRITE_TIMEOUT" default:"60s" validate:"gte=0" desc:"time to write a response, from the end of the headers"`
	IdleTimeout       time.Duration   `envconfig:"HTTP_IDLE_TIMEOUT" default:"120s" validate:"gte=0" desc:"keep-alive idle time"`
	MaxHeaderBytes    config.ByteSize `envconfig:"HTTP_MAX_HEADER_BYTES" default:"64KiB" validate:"gt=0" desc:"request header size limit (larger gets 431)"`
	MaxHeaderFields   int             `envconfig:"HTTP_MAX_HEADER_FIELDS" default:"100" validate:"gt=0,lte=10000" desc:"distinct request header names allowed (more gets 431); Envoy's default is also 100"`
	MaxBodyBytes      config.ByteSize `envconfig:"HTTP_MAX_BODY_BYTES" default:"10MiB" validate:"gt=0" desc:"request body size limit (larger gets 413)"`
	RequestTimeout    time.Duration   `envconfig:"HTTP_REQUEST_TIMEOUT" default:"30s" validate:"gte=0" desc:"deadline of a request's context; 0 disables"`

	// Request bodies are read before admission (load shedding), so that waiting on a client's
	// bytes holds no server slot; see guard.BodyGate.
	BodyBufferBytes  config.ByteSize `envconfig:"HTTP_BODY_BUFFER_BYTES" default:"1MiB" validate:"gte=0" desc:"request bodies up to this size are read whole before the request is admitted, so that a slow client holds no server slot; larger ones are streamed to the handler; 0 turns body reading before admission, and the minimum rate, off"`
	BodyBufferTotal  config.ByteSize `envconfig:"HTTP_BODY_BUFFER_TOTAL" default:"64MiB" validate:"gte=0" desc:"memory all bodies read before admission may hold together; beyond it, bodies are streamed to the handler"`
	BodyMinRate      config.ByteSize `envconfig:"HTTP_BODY_MIN_RATE" default:"1KiB" validate:"gte=0" desc:"slowest a request body may arrive, in bytes per second, once HTTP_BODY_GRACE has passed (408 below)"`
	BodyGrace        time.Duration   `envconfig:"HTTP_BODY_GRACE" default:"5s" validate:"gte=0" desc:"time a request body may take before HTTP_BODY_MIN_RATE applies"`
	BodyReadsPerPeer int             `envconfig:"HTTP_BODY_READS_PER_PEER" default:"64" validate:"gte=0" desc:"request bodies one client address may have in progress before admission at once (429 beyond)"`

	Discovery             string            `envconfig:"DISCOVERY" validate:"omitempty,oneof=none static consul etcd dns" desc:"how Client finds services: static (DISCOVERY_STATIC_<SERVICE>=host:port,...), consul, etcd (ETCD_ENDPOINTS), dns (DISCOVERY_DNS_*; registers with Consul when CONSUL_HTTP_ADDR is set), none; default consul when CONSUL_HTTP_ADDR is set, else static"`
	Register              bool              `envconfig:"REGISTER" default:"true" desc:"with DISCOVERY=consul or etcd (or dns with CONSUL_HTTP_ADDR set), register this instance once ready and deregister it at the start of the drain"`
	AdvertiseAddress      string            `envconfig:"ADVERTISE_ADDRESS" desc:"address registered for callers to dial; default HOST when it is a specific address, else the Consul agent's node address"`
	ServiceTags           []string          `envconfig:"SERVICE_TAGS" desc:"tags registered with the instance"`
	ServiceMeta           map[string]string `envconfig:"SERVICE_META" desc:"metadata registered with the instance (key:value,...)"`
	ConsulConsistency     string            `envconfig:"CONSUL_CONSISTENCY" default:"stale" validate:"oneof=stale leader consistent cached" desc:"read mode of discovery watches: stale (any server; available during elections), leader, consistent, cached (agent cache)"`
	ConsulCheckInterval   time.Duration     `envconfig:"CONSUL_CHECK_INTERVAL" default:"2s" validate:"gt=0" desc:"how often the Consul agent probes /readyz; when deregistration at the start of the drain fails, the failing check is what takes the instance out of Consul (and its DNS), so it must fit in DRAIN_DELAY with the callers' refresh (docs/discovery.md)"`
	DiscoveryMaxStaleness time.Duration     `envconfig:"DISCOVERY_MAX_STALENESS" default:"0s" validate:"gte=0" desc:"drop a last-known-good instance list older than this while the registry is unreachable; 0 keeps it forever"`
	// Settings is etcd's connection and registration (ETCD_*, and etcdctl's ETCDCTL_* TLS and auth
	// variables), used with DISCOVERY=etcd.
	etcd.Settings
	// LBPolicy is the balancing policy of every Client; CLIENT_<NAME>_LB_POLICY overrides it per
	// dependency (see TransportConfig).
	LBPolicy string `envconfig:"LB_POLICY" default:"p2c" desc:"balancing policy of every client, by registered name (p2c, least_request, round_robin, random, ring_hash, or one added with lb.Register); code (WithBalancer) and CLIENT_<NAME>_LB_POLICY override it"`

	// DNSDiscoveryConfig configures DISCOVERY=dns (DISCOVERY_DNS_*).
	DNSDiscoveryConfig

	// Server protection: adaptive load shedding (on by default), per-caller rate limiting (off until
	// RATE_LIMIT_RPS is set), bearer-token authentication (on when AUTH_JWKS_URL or AUTH_JWKS_FILE is
	// set) and TLS / mutual TLS (on when TLS_CERT_FILE is set).
	guard.ShedConfig
	guard.RateLimitConfig
	auth.Config
	auth.TLSConfig

	// ServerConfig configures the gRPC server (GRPC_*), served only when the service uses it
	// (Service.GRPC).
	grpcx.ServerConfig

	// ClientTLS is the TLS of calls made through Client, shared by every dependency; each setting
	// can be overridden per dependency as CLIENT_<NAME>_TLS_* (see TransportConfig).
	ClientTLS auth.ClientTLSConfig `envconfig:"CLIENT_TLS"`

	LogLevel        string  `envconfig:"LOG_LEVEL" default:"info" lower:"true" validate:"oneof=debug info warn error" desc:"log level; changeable at runtime on the admin port"`
	LogFormat       string  `envconfig:"LOG_FORMAT" default:"json" lower:"true" validate:"oneof=json console" desc:"log encoding"`
	AccessLog       bool    `envconfig:"ACCESS_LOG" default:"true" desc:"log one line per request"`
	AccessLogSample float64 `envconfig:"ACCESS_LOG_SAMPLE" default:"1" validate:"gte=0,lte=1" desc:"fraction of successful requests to log; errors are always logged"`

	// LogBuffer buffers the lines written to standard output (see telemetry.Settings.LogBuffer).
	LogBuffer config.ByteSize `envconfig:"LOG_BUFFER" default:"256KiB" validate:"gte=0,lte=67108864" desc:"lines to standard output are buffered up to this size (at most 64MiB) and written when it fills, at least every second, at once for errors, and at shutdown; loggers wait for a slow output rather than drop lines; 0 writes each line at once"`

	// Admin debug endpoints: who may use pprof, /debug/loglevel, /debug/info and HandleAdmin routes.
	// The probes and /metrics on the admin port answer everyone.
	AdminDebug string        `envconfig:"ADMIN_DEBUG" default:"loopback" validate:"oneof=loopback token open off" desc:"who may use the admin port's debug endpoints (pprof, /debug/loglevel, /debug/info, HandleAdmin routes): loopback (loopback peers, and others with ADMIN_TOKEN), token (only requests with ADMIN_TOKEN), open (anyone), off (not served); probes and /metrics always answer everyone"`
	AdminToken config.Secret `envconfig:"ADMIN_TOKEN" desc:"bearer token that opens the admin port's debug endpoints to any peer (Authorization: Bearer <token>); required by ADMIN_DEBUG=token."`
}

// Validate checks relations between settings.
func (s *Settings) Validate() error {
	var errs []error
	if s.ShutdownTimeout <= s.DrainDelay {
		errs = append(errs, config.Invalid("SHUTDOWN_TIMEOUT", s.ShutdownTimeout.String(),
			"must be longer than DRAIN_DELAY ("+s.DrainDelay.String()+"), or in-flight requests get no time to finish"))
	}
	if s.Port != 0 && s.Port == s.AdminPort {
		errs = append(errs, config.Invalid("ADMIN_PORT", strconv.Itoa(s.AdminPort), "must differ from PORT"))
	}
	if s.AdminDebug == AdminDebugToken && s.AdminToken == "" {
		errs = append(errs, config.Invalid("ADMIN_DEBUG", s.AdminDebug, "needs ADMIN_TOKEN (or ADMIN_TOKEN_FILE), or nobody could use the debug endpoints"))
	}
	if err := checkLBPolicy(s.LBPolicy); err != nil {
		errs = append(errs, config.Invalid("LB_POLICY", s.LBPolicy, err.Error()))
	}
	errs = append(errs, s.ClientTLS.Check("CLIENT_TLS"))
	if s.Discovery == DiscoveryEtcd {
		errs = append(errs, s.Settings.Check())
	}
	return errors.Join(errs...)
}

// bodyGate returns the gate that reads request bodies before admission, or nil when
// HTTP_BODY_BUFFER_BYTES is 0. Clients are told apart as the rate limiter does (TRUSTED_PROXIES).
func (s *Settings) bodyGate(opts ...guard.Option) (*guard.BodyGate, error) {
	if s.BodyBufferBytes <= 0 {
		return nil, nil
	}
	return guard.NewBodyGate(guard.BodyConfig{
		BufferBytes: int64(s.BodyBufferBytes),
		BufferTotal: int64(s.BodyBufferTotal),
		MinRate:     int64(s.BodyMinRate),
		Grace:       s.BodyGrace,
		MaxTime:     s.ReadTimeout,
		PerPeer:     s.BodyReadsPerPeer,
		ClientIP:    &guard.ClientIP{Trusted: s.TrustedProxies, IPv6Prefix: s.IPv6Prefix},
	}, opts...)
}

// AuthEnabled reports whether bearer-token authentication is configured.
func (s *Settings) AuthEnabled() bool { return s.Config.Enabled() }
