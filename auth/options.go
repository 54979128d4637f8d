package auth

import (
	"net/http"
	"time"
)

// Option configures a Verifier, a JWKS or a Reloader. Options that do not concern the type they
// are given to are ignored.
type Option interface{ apply(*options) }

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	now func() time.Time

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
}

// Defaults.
const (
	// DefaultLeeway is the clock skew allowed on exp, nbf and iat.
	DefaultLeeway = 30 * time.Second
	// DefaultMinRefresh is how often, at most, a token with an unknown key id makes a JWKS refetch.
	DefaultMinRefresh = time.Minute
	// DefaultRefreshInterval is how often JWKS.Run refetches the key set.
	DefaultRefreshInterval = 15 * time.Minute
	// DefaultJWKSMaxBytes bounds the size of a JWKS document.
	DefaultJWKSMaxBytes = 1 << 20
)

// DefaultAlgorithms are the asymmetric JWS algorithms accepted unless WithAlgorithms says
// otherwise. HMAC algorithms are never accepted with asymmetric keys, and "none" never.
var DefaultAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

func newOptions(opts []Option) options {
	o := options{
		now:             time.Now,
		leeway:          DefaultLeeway,
		algorithms:      DefaultAlgorithms,
		route:           func(r *http.Request) string { return r.Pattern },
		minRefresh:      DefaultMinRefresh,
		refreshInterval: DefaultRefreshInterval,
		maxBytes:        DefaultJWKSMaxBytes,
		client:          &http.Client{Timeout: 10 * time.Second},
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

// WithHTTPClient sets the client a JWKS is fetched with (default: a client with a 10 s timeout).
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
