package auth

import (
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/internal/obs"
)

// Option configures a Verifier, a JWKS or a Reloader. Options that do not concern the type they
// are given to are ignored.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	now func() time.Time
	obs.Sinks

	// Verifier.
	issuer      string
	audience    []string
	leeway      time.Duration
	algorithms  []string
	optional    bool
	realm       string
	route       func(*http.Request) string
	routeScopes map[string][]string

	// JWKS.
	client          *http.Client
	minRefresh      time.Duration
	refreshInterval time.Duration
	maxBytes        int64
	fetchTimeout    time.Duration
	fetchWait       time.Duration
}

// Defaults.
const (
	// DefaultLeeway is the clock skew allowed on exp, nbf and iat.
	DefaultLeeway = 30 * time.Second
	// DefaultMinRefresh is how often, at most, a token with an unknown key id makes a JWKS refetch.
	DefaultMinRefresh = time.Minute
	// DefaultRefreshInterval is how often JWKS.Run refetches the key set.
	DefaultRefreshInterval = 15 * time.Minute
	// DefaultJWKSMaxBytes bounds the size of a JWKS document, fetched or read from a file.
	DefaultJWKSMaxBytes = 1 << 20
	// DefaultFetchTimeout bounds one JWKS fetch.
	DefaultFetchTimeout = 10 * time.Second
	// DefaultFetchWait is the longest a request for an unknown key id may wait for a JWKS fetch,
	// counted from the start of the fetch (see WithFetchWait).
	DefaultFetchWait = time.Second
)

// DefaultAlgorithms are the asymmetric JWS algorithms accepted unless WithAlgorithms says
// otherwise. HMAC algorithms are never accepted with asymmetric keys, and "none" never.
var DefaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

func newOptions(opts []Option) options {
	o := options{
		now:             time.Now,
		Sinks:           obs.Defaults(),
		leeway:          DefaultLeeway,
		algorithms:      DefaultAlgorithms,
		route:           func(r *http.Request) string { return r.Pattern },
		minRefresh:      DefaultMinRefresh,
		refreshInterval: DefaultRefreshInterval,
		maxBytes:        DefaultJWKSMaxBytes,
		fetchTimeout:    DefaultFetchTimeout,
		fetchWait:       DefaultFetchWait,
		client:          &http.Client{Timeout: DefaultFetchTimeout},
	}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}

// WithClock replaces time.Now (token validity, refresh intervals, certificate reload checks).
func WithClock(now func() time.Time) Option {
	return optionFunc(func(o *options) {
		if now != nil {
			o.now = now
		}
	})
}

// WithMeterProvider sets where a JWKS reports its metrics (chassis.auth.jwks.*). The default is a
// no-op provider: the package never reads the OpenTelemetry globals.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(o *options) { o.SetMeterProvider(mp) })
}

// WithLogger sets the logger of a JWKS (failed fetches, rejected keys) and of Config.New (keys of
// AUTH_JWKS_FILE that were skipped). The default discards.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.SetLogger(l) })
}

// WithIssuer requires the token's "iss" to equal iss.
func WithIssuer(iss string) Option { return optionFunc(func(o *options) { o.issuer = iss }) }

// WithAudience requires the token's "aud" to contain at least one of aud.
func WithAudience(aud ...string) Option {
	return optionFunc(func(o *options) { o.audience = append([]string(nil), aud...) })
}

// WithLeeway sets the clock skew allowed on exp, nbf and iat (default DefaultLeeway).
func WithLeeway(d time.Duration) Option { return optionFunc(func(o *options) { o.leeway = max(0, d) }) }

// WithAlgorithms sets the accepted JWS algorithms (default DefaultAlgorithms).
func WithAlgorithms(algs ...string) Option {
	return optionFunc(func(o *options) { o.algorithms = append([]string(nil), algs...) })
}

// WithOptional lets requests without an Authorization header through anonymously (no principal in
// the context); routes that need a caller then use RequireScopes or RequireClaim. A token that is
// present must still be valid.
func WithOptional(on bool) Option { return optionFunc(func(o *options) { o.optional = on }) }

// WithRealm sets the realm of WWW-Authenticate challenges.
func WithRealm(realm string) Option { return optionFunc(func(o *options) { o.realm = realm }) }

// WithRouteScopes requires scopes per route template ("POST /orders": {"orders:write"}), checked by
// the Verifier's middleware. The route is found with WithRouteFunc.
func WithRouteScopes(m map[string][]string) Option {
	return optionFunc(func(o *options) {
		o.routeScopes = make(map[string][]string, len(m))
		for k, v := range m {
			o.routeScopes[k] = append([]string(nil), v...)
		}
	})
}

// WithRouteFunc sets how the route template of a request is found (default r.Pattern, which is only
// set once a ServeMux has routed the request).
func WithRouteFunc(f func(*http.Request) string) Option {
	return optionFunc(func(o *options) {
		if f != nil {
			o.route = f
		}
	})
}

// WithHTTPClient sets the client a JWKS is fetched with (default: a client with a
// DefaultFetchTimeout timeout). WithFetchTimeout bounds each fetch whatever the client's timeout.
func WithHTTPClient(c *http.Client) Option {
	return optionFunc(func(o *options) {
		if c != nil {
			o.client = c
		}
	})
}

// WithMinRefresh sets how often, at most, tokens with unknown key ids make a JWKS refetch (default
// DefaultMinRefresh). It also spaces out retries after a failed fetch.
func WithMinRefresh(d time.Duration) Option {
	return optionFunc(func(o *options) { o.minRefresh = max(0, d) })
}

// WithRefreshInterval sets how often JWKS.Run refetches the key set (default
// DefaultRefreshInterval).
func WithRefreshInterval(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.refreshInterval = d
		}
	})
}

// WithFetchTimeout bounds one JWKS fetch (default DefaultFetchTimeout). A fetch that times out counts
// as failed: the next one starts no sooner than WithMinRefresh later.
func WithFetchTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.fetchTimeout = d
		}
	})
}

// WithFetchWait bounds how long after a JWKS fetch starts a request for an unknown key id may still
// wait for it (default DefaultFetchWait). Once a fetch has succeeded the wait is shorter: four times
// as long as the last successful fetch took, at least 100 ms. Later requests are refused at once
// while the fetch runs. 0 never waits: a token signed with a key published since the last fetch is
// refused until the fetch it started completes.
func WithFetchWait(d time.Duration) Option {
	return optionFunc(func(o *options) { o.fetchWait = max(0, d) })
}
