package chassis

import (
	"errors"
	"strconv"
	"time"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/config"
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
	MaxBodyBytes      config.ByteSize `envconfig:"HTTP_MAX_BODY_BYTES" default:"10MiB" validate:"gt=0" desc:"request body size limit (larger gets 413)"`
	RequestTimeout    time.Duration   `envconfig:"HTTP_REQUEST_TIMEOUT" default:"30s" validate:"gte=0" desc:"deadline of a request's context; 0 disables"`

	Discovery             string            `envconfig:"DISCOVERY" validate:"omitempty,oneof=none static consul" desc:"how Client finds services: static (DISCOVERY_STATIC_<SERVICE>=host:port,...), consul, none; default consul when CONSUL_HTTP_ADDR is set, else static"`
	Register              bool              `envconfig:"REGISTER" default:"true" desc:"with DISCOVERY=consul, register this instance once ready and deregister it at the start of the drain"`
	AdvertiseAddress      string            `envconfig:"ADVERTISE_ADDRESS" desc:"address registered for callers to dial; default HOST when it is a specific address, else the Consul agent's node address"`
	ServiceTags           []string          `envconfig:"SERVICE_TAGS" desc:"tags registered with the instance"`
	ServiceMeta           map[string]string `envconfig:"SERVICE_META" desc:"metadata registered with the instance (key:value,...)"`
	ConsulConsistency     string            `envconfig:"CONSUL_CONSISTENCY" default:"stale" validate:"oneof=stale leader consistent cached" desc:"read mode of discovery watches: stale (any server; available during elections), leader, consistent, cached (agent cache)"`
	DiscoveryMaxStaleness time.Duration     `envconfig:"DISCOVERY_MAX_STALENESS" default:"0s" validate:"gte=0" desc:"drop a last-known-good instance list older than this while the registry is unreachable; 0 keeps it forever"`

	// Server protection: adaptive load shedding (on by default), per-caller rate limiting (off until
	// RATE_LIMIT_RPS is set), bearer-token authentication (on when AUTH_JWKS_URL or AUTH_JWKS_FILE is
	// set) and TLS / mutual TLS (on when TLS_CERT_FILE is set).
	guard.ShedConfig
	guard.RateLimitConfig
	auth.Config
	auth.TLSConfig

	// ClientTLS is the TLS of calls made through Client, shared by every dependency; each setting
	// can be overridden per dependency as CLIENT_<NAME>_TLS_* (see TransportConfig).
	ClientTLS auth.ClientTLSConfig `envconfig:"CLIENT_TLS"`

	LogLevel        string  `envconfig:"LOG_LEVEL" default:"info" validate:"oneof=debug info warn error" desc:"log level; changeable at runtime on the admin port"`
	LogFormat       string  `envconfig:"LOG_FORMAT" default:"json" validate:"oneof=json console" desc:"log encoding"`
	AccessLog       bool    `envconfig:"ACCESS_LOG" default:"true" desc:"log one line per request"`
	AccessLogSample float64 `envconfig:"ACCESS_LOG_SAMPLE" default:"1" validate:"gte=0,lte=1" desc:"fraction of successful requests to log; errors are always logged"`
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
	errs = append(errs, s.ClientTLS.Check("CLIENT_TLS"))
	return errors.Join(errs...)
}

// AuthEnabled reports whether bearer-token authentication is configured.
func (s *Settings) AuthEnabled() bool { return s.Config.Enabled() }
