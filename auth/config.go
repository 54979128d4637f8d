package auth

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config configures bearer-token authentication from the environment (envconfig tags). Set
// AUTH_JWKS_URL or AUTH_JWKS_FILE to turn it on.
type Config struct {
	JWKSURL     string        `envconfig:"AUTH_JWKS_URL" desc:"URL of the issuer's JSON Web Key Set; setting it turns bearer-token authentication on"`
	JWKSFile    string        `envconfig:"AUTH_JWKS_FILE" desc:"file holding a JSON Web Key Set, instead of AUTH_JWKS_URL (static keys)"`
	Issuer      string        `envconfig:"AUTH_ISSUER" desc:"required iss claim"`
	Audience    []string      `envconfig:"AUTH_AUDIENCE" desc:"accepted aud values, comma-separated (one must match)"`
	Algorithms  []string      `envconfig:"AUTH_ALGORITHMS" default:"RS256,RS384,RS512,PS256,PS384,PS512,ES256,ES384,ES512,EdDSA" desc:"accepted JWS algorithms (none and HS* are refused)"`
	Leeway      time.Duration `envconfig:"AUTH_LEEWAY" default:"30s" desc:"clock skew allowed on exp, nbf and iat"`
	Optional    bool          `envconfig:"AUTH_OPTIONAL" default:"false" desc:"let requests without a token through anonymously (routes then require scopes themselves)"`
	MinRefresh  time.Duration `envconfig:"AUTH_JWKS_MIN_REFRESH" default:"1m" desc:"unknown key ids refetch the JWKS at most this often"`
	Refresh     time.Duration `envconfig:"AUTH_JWKS_REFRESH" default:"15m" desc:"background JWKS refresh period"`
	RouteScopes RouteScopes   `envconfig:"AUTH_ROUTE_SCOPES" desc:"scopes required per route: PATTERN=scope1 scope2, entries separated by ';'"`
	Realm       string        `envconfig:"AUTH_REALM" desc:"realm in WWW-Authenticate challenges"`
}

// Enabled reports whether a key source is configured.
func (c Config) Enabled() bool { return c.JWKSURL != "" || c.JWKSFile != "" }

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.JWKSURL != "" && c.JWKSFile != "" {
		errs = append(errs, errors.New("set AUTH_JWKS_URL or AUTH_JWKS_FILE, not both"))
	}
	if c.JWKSURL != "" && !strings.HasPrefix(c.JWKSURL, "https://") && !strings.HasPrefix(c.JWKSURL, "http://") {
		errs = append(errs, fmt.Errorf("AUTH_JWKS_URL=%q: not an http(s) URL", c.JWKSURL))
	}
	for _, a := range c.Algorithms {
		if k := algKind(a); k == kindNone || k == kindHMAC {
			errs = append(errs, fmt.Errorf("AUTH_ALGORITHMS: %q is not accepted (asymmetric algorithms only)", a))
		}
	}
	if c.Leeway < 0 || c.MinRefresh < 0 || c.Refresh < 0 {
		errs = append(errs, errors.New("AUTH_LEEWAY, AUTH_JWKS_MIN_REFRESH and AUTH_JWKS_REFRESH must not be negative"))
	}
	return errors.Join(errs...)
}

// New builds the Verifier for c and, when the keys come from a URL, the JWKS whose Run the caller
// must start (and stop through its context) and whose Close the caller must call after Run has
// returned. It returns (nil, nil, nil) when c is not Enabled.
//
// AUTH_JWKS_FILE is read once, here: a regular file of at most DefaultJWKSMaxBytes (a device, a
// FIFO or a larger file is refused before anything is read). Keys that cannot be used are skipped
// and logged (WithLogger); a file without a usable key is an error. File errors are
// *config.Problem, naming the variable and the path, never the file's content.
func (c Config) New(opts ...Option) (*Verifier, *JWKS, error) {
	if !c.Enabled() {
		return nil, nil, nil
	}
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	base := []Option{
		WithAlgorithms(c.Algorithms...), WithLeeway(c.Leeway), WithOptional(c.Optional),
		WithMinRefresh(c.MinRefresh), WithRefreshInterval(c.Refresh), WithRealm(c.Realm),
	}
	if c.Issuer != "" {
		base = append(base, WithIssuer(c.Issuer))
	}
	if len(c.Audience) > 0 {
		base = append(base, WithAudience(c.Audience...))
	}
	if len(c.RouteScopes) > 0 {
		base = append(base, WithRouteScopes(c.RouteScopes))
	}
	opts = append(base, opts...)
	if c.JWKSFile != "" {
		keys, err := loadKeyFile(c.JWKSFile, newOptions(opts))
		if err != nil {
			return nil, nil, err
		}
		v, err := NewVerifier(keys, opts...)
		return v, nil, err
	}
	jwks, err := NewJWKS(c.JWKSURL, opts...)
	if err != nil {
		return nil, nil, err
	}
	v, err := NewVerifier(jwks, opts...)
	if err != nil {
		_ = jwks.Close() // unregisters its metrics callback
		return nil, nil, err
	}
	return v, jwks, nil
}

// loadKeyFile reads the key set of AUTH_JWKS_FILE.
func loadKeyFile(path string, o options) (keyIndex, error) {
	const variable = "AUTH_JWKS_FILE"
	data, err := readFile(variable, path, o.maxBytes)
	if err != nil {
		return nil, err
	}
	set, err := ParseJWKS(data)
	if err == nil && len(set.Keys) == 0 {
		err = noUsableKey(set.Rejected)
	}
	if err != nil {
		return nil, fileProblem(variable, path, err)
	}
	for _, r := range set.Rejected {
		o.Logger.Warn("AUTH_JWKS_FILE: key rejected", "file", path, "kid", clip(r.KeyID), "kty", clip(r.Type), "index", r.Index, "reason", r.Err.Error())
	}
	return indexKeys(set.Keys), nil
}

// RouteScopes maps route templates to required scopes. It decodes from
// "POST /orders=orders:write; DELETE /orders/{id}=orders:write orders:admin".
type RouteScopes map[string][]string

// UnmarshalText implements encoding.TextUnmarshaler.
func (rs *RouteScopes) UnmarshalText(text []byte) error {
	out := RouteScopes{}
	for _, e := range strings.Split(string(text), ";") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		pattern, scopes, ok := strings.Cut(e, "=")
		if !ok || strings.TrimSpace(pattern) == "" || len(strings.Fields(scopes)) == 0 {
			return fmt.Errorf("%q: want PATTERN=scope [scope...], for example \"POST /orders=orders:write\"", e)
		}
		out[strings.TrimSpace(pattern)] = strings.Fields(scopes)
	}
	*rs = out
	return nil
}
