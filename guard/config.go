package guard

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ShedConfig configures a Shedder. It is meant to be embedded (anonymously) in a service's
// environment configuration; the tags are github.com/kelseyhightower/envconfig's. Zero fields take
// the defaults below when passed to NewShedder.
type ShedConfig struct {
	Enabled         bool          `envconfig:"SHED_ENABLED" default:"true" desc:"adaptive load shedding: refuse requests beyond a latency-derived concurrency limit with 503"`
	InitialLimit    int           `envconfig:"SHED_INITIAL_LIMIT" default:"100" desc:"concurrency limit of a fresh instance until latency shows overload (then it drops to what the server completes at baseline latency); it doubles per window while latency allows and the limit is reached"`
	MinLimit        int           `envconfig:"SHED_MIN_LIMIT" default:"4" desc:"the limit never goes below this many requests in flight"`
	MaxLimit        int           `envconfig:"SHED_MAX_LIMIT" default:"5000" desc:"the limit never goes above this many requests in flight"`
	Tolerance       float64       `envconfig:"SHED_LATENCY_TOLERANCE" default:"1.5" desc:"average latency may reach this multiple of the baseline before the limit shrinks"`
	Window          time.Duration `envconfig:"SHED_WINDOW" default:"100ms" desc:"minimum length of a latency sample window (the limit moves at most once per window)"`
	MinSamples      int           `envconfig:"SHED_MIN_SAMPLES" default:"10" desc:"completed requests a sample window needs before the limit moves"`
	Smoothing       float64       `envconfig:"SHED_SMOOTHING" default:"0.2" desc:"share of each new estimate mixed into the limit (0-1]"`
	SheddableShare  float64       `envconfig:"SHED_SHEDDABLE_SHARE" default:"0.75" desc:"sheddable requests are refused once in-flight requests reach this share of the limit"`
	QueueTimeout    time.Duration `envconfig:"SHED_QUEUE_TIMEOUT" default:"0s" desc:"how long a default-priority request may wait for a slot before 503 (0: refuse at once)"`
	QueueSize       int           `envconfig:"SHED_QUEUE_SIZE" default:"0" desc:"most requests waiting for a slot (0: as many as the current limit)"`
	RetryAfter      time.Duration `envconfig:"SHED_RETRY_AFTER" default:"1s" desc:"Retry-After sent with 503 (whole seconds, at least 1)"`
	PriorityHeader  string        `envconfig:"SHED_PRIORITY_HEADER" default:"X-Request-Priority" desc:"request header that can mark a request sheddable (it cannot raise priority)"`
	CriticalRoutes  []string      `envconfig:"SHED_CRITICAL_ROUTES" desc:"route templates never shed, comma-separated (for example GET /livez)"`
	SheddableRoutes []string      `envconfig:"SHED_SHEDDABLE_ROUTES" desc:"route templates shed first, comma-separated"`
}

// DefaultInitialLimit is the concurrency limit of a fresh Shedder, before it has measured anything.
// It is a cap against catastrophic overload, not an estimate: a new instance in a rolling deploy
// takes over tens of requests in flight at once, and refusing them would fail every caller that
// does not retry. Under real overload the first windows show it (latency grows with the number in
// flight), and the limit then drops to the measured capacity; the queue the cap let in is at most
// DefaultInitialLimit requests, drained at the server's own throughput.
const DefaultInitialLimit = 100

// DefaultShedConfig returns the defaults that the environment tags describe.
func DefaultShedConfig() ShedConfig {
	return ShedConfig{
		Enabled:        true,
		InitialLimit:   DefaultInitialLimit,
		MinLimit:       4,
		MaxLimit:       5000,
		Tolerance:      1.5,
		Window:         100 * time.Millisecond,
		MinSamples:     10,
		Smoothing:      0.2,
		SheddableShare: 0.75,
		RetryAfter:     time.Second,
		PriorityHeader: "X-Request-Priority",
	}
}

func (c ShedConfig) withDefaults() ShedConfig {
	d := DefaultShedConfig()
	if c.MinLimit <= 0 {
		c.MinLimit = d.MinLimit
	}
	if c.MaxLimit <= 0 {
		c.MaxLimit = d.MaxLimit
	}
	if c.MaxLimit < c.MinLimit {
		c.MaxLimit = c.MinLimit
	}
	if c.InitialLimit <= 0 {
		c.InitialLimit = d.InitialLimit
	}
	c.InitialLimit = max(c.MinLimit, min(c.MaxLimit, c.InitialLimit))
	if !(c.Tolerance >= 1) {
		c.Tolerance = d.Tolerance
	}
	if c.Window <= 0 {
		c.Window = d.Window
	}
	if c.MinSamples <= 0 {
		c.MinSamples = d.MinSamples
	}
	if !(c.Smoothing > 0 && c.Smoothing <= 1) {
		c.Smoothing = d.Smoothing
	}
	if !(c.SheddableShare > 0 && c.SheddableShare <= 1) {
		c.SheddableShare = d.SheddableShare
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = d.RetryAfter
	}
	return c
}

// Validate reports every out-of-range value at once.
func (c ShedConfig) Validate() error {
	var errs []error
	if c.MinLimit < 0 || c.MaxLimit < 0 || c.InitialLimit < 0 {
		errs = append(errs, errors.New("SHED_MIN_LIMIT, SHED_MAX_LIMIT and SHED_INITIAL_LIMIT must not be negative"))
	}
	if c.MaxLimit > 0 && c.MinLimit > c.MaxLimit {
		errs = append(errs, fmt.Errorf("SHED_MIN_LIMIT=%d is above SHED_MAX_LIMIT=%d", c.MinLimit, c.MaxLimit))
	}
	if c.Tolerance != 0 && c.Tolerance < 1 {
		errs = append(errs, fmt.Errorf("SHED_LATENCY_TOLERANCE=%g: must be at least 1", c.Tolerance))
	}
	if c.Smoothing < 0 || c.Smoothing > 1 {
		errs = append(errs, fmt.Errorf("SHED_SMOOTHING=%g: must be in (0, 1]", c.Smoothing))
	}
	if c.SheddableShare < 0 || c.SheddableShare > 1 {
		errs = append(errs, fmt.Errorf("SHED_SHEDDABLE_SHARE=%g: must be in (0, 1]", c.SheddableShare))
	}
	if c.QueueTimeout < 0 || c.Window < 0 || c.RetryAfter < 0 {
		errs = append(errs, errors.New("SHED_QUEUE_TIMEOUT, SHED_WINDOW and SHED_RETRY_AFTER must not be negative"))
	}
	return errors.Join(errs...)
}

// NewShedder returns a Shedder for c, or nil when c.Enabled is false. A nil *Shedder's Middleware
// returns the handler unchanged, so callers can wire it unconditionally.
func (c ShedConfig) NewShedder(opts ...Option) (*Shedder, error) {
	if !c.Enabled {
		return nil, nil
	}
	return NewShedder(c, opts...)
}

// RateLimitConfig configures a Limiter from the environment. Rate limiting is off by default: a
// limit keyed by client address is only right once TRUSTED_PROXIES names the load balancers in
// front of the service (otherwise every caller shares the balancer's address).
type RateLimitConfig struct {
	RPS            float64    `envconfig:"RATE_LIMIT_RPS" default:"0" validate:"omitempty,gte=0.001,lte=1000000000" desc:"requests per second allowed to each caller (0: no default limit)"`
	Burst          int        `envconfig:"RATE_LIMIT_BURST" default:"0" validate:"gte=0,lte=1000000" desc:"bucket size: requests a caller may send at once (0: one second's worth)"`
	Routes         RouteRates `envconfig:"RATE_LIMIT_ROUTES" desc:"per-route limits: PATTERN=RPS[:BURST] or PATTERN=off, separated by ';' (for example POST /orders=10:20)"`
	KeyHeader      string     `envconfig:"RATE_LIMIT_KEY_HEADER" desc:"header naming the caller (for example X-API-Key), tried after the authenticated subject; only for headers verified upstream"`
	TrustedProxies Prefixes   `envconfig:"TRUSTED_PROXIES" desc:"comma-separated networks of proxies whose Forwarded/X-Forwarded-For headers are believed"`
	IPv6Prefix     int        `envconfig:"RATE_LIMIT_IPV6_PREFIX" default:"64" desc:"IPv6 clients within one prefix of this length share a bucket"`
	MaxKeys        int        `envconfig:"RATE_LIMIT_MAX_KEYS" default:"65536" desc:"most callers tracked per policy (memory bound, about 100 bytes each)"`
	Headers        bool       `envconfig:"RATE_LIMIT_HEADERS" default:"true" desc:"send RateLimit and RateLimit-Policy headers on every response, not only on 429"`
}

// Validate reports every out-of-range value at once.
func (c RateLimitConfig) Validate() error {
	var errs []error
	if c.RPS < 0 {
		errs = append(errs, fmt.Errorf("RATE_LIMIT_RPS=%g: must not be negative", c.RPS))
	}
	if c.Burst < 0 {
		errs = append(errs, fmt.Errorf("RATE_LIMIT_BURST=%d: must not be negative", c.Burst))
	}
	if c.IPv6Prefix < 0 || c.IPv6Prefix > 128 {
		errs = append(errs, fmt.Errorf("RATE_LIMIT_IPV6_PREFIX=%d: must be 0-128", c.IPv6Prefix))
	}
	if c.MaxKeys < 0 {
		errs = append(errs, fmt.Errorf("RATE_LIMIT_MAX_KEYS=%d: must not be negative", c.MaxKeys))
	}
	return errors.Join(errs...)
}

// NewLimiter returns a Limiter for c, or nil when neither a default rate nor a route rate is set (a
// nil *Limiter's Middleware returns the handler unchanged). Callers are keyed by, in order: subject
// (when not nil, for example auth.Subject), the KeyHeader header (when set), and the client address
// found through TrustedProxies. Options given after these defaults win.
func (c RateLimitConfig) NewLimiter(subject func(context.Context) string, opts ...Option) (*Limiter, error) {
	if c.RPS <= 0 && len(c.Routes) == 0 {
		return nil, nil
	}
	var keys []KeyFunc
	if subject != nil {
		keys = append(keys, KeyContext(subject))
	}
	if c.KeyHeader != "" {
		keys = append(keys, KeyHeader(c.KeyHeader))
	}
	keys = append(keys, KeyIP(&ClientIP{Trusted: c.TrustedProxies, IPv6Prefix: c.IPv6Prefix}))
	base := []Option{WithKeys(keys...), WithHeaders(c.Headers), WithMaxKeys(c.MaxKeys)}
	if len(c.Routes) > 0 {
		base = append(base, WithRouteRates(c.Routes))
	}
	return NewLimiter(Rate{PerSecond: c.RPS, Burst: c.Burst}, append(base, opts...)...)
}
