package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cloudchassis/kit/problem"
)

// Verifier checks bearer tokens: signature against a KeySet with an algorithm allow-list, then
// iss, aud, exp (required) and nbf with leeway. It is safe for concurrent use.
type Verifier struct {
	keys        KeySet
	parser      *jwt.Parser
	algs        []string
	optional    bool
	challenge   string
	route       func(*http.Request) string
	routeScopes map[string][]string
}

// NewVerifier returns a Verifier that takes keys from keys. It refuses configurations that would
// accept forged tokens: "none" in the algorithm list, HMAC algorithms with any key source other
// than StaticKeys holding only secrets, or asymmetric algorithms beside HMAC secrets.
func NewVerifier(keys KeySet, opts ...Option) (*Verifier, error) {
	if keys == nil {
		return nil, errors.New("auth: NewVerifier needs a KeySet")
	}
	o := newOptions(opts)
	if len(o.algorithms) == 0 {
		return nil, errors.New("auth: empty algorithm list")
	}
	hmacAlg, asymAlg := false, false
	for _, a := range o.algorithms {
		switch algKind(a) {
		case kindNone:
			return nil, fmt.Errorf("auth: algorithm %q is not accepted (use RS*, PS*, ES*, EdDSA, or HS* with static secrets)", a)
		case kindHMAC:
			hmacAlg = true
		default:
			asymAlg = true
		}
	}
	if hmacAlg {
		static, ok := keys.(StaticKeys)
		if !ok {
			return nil, errors.New("auth: HMAC algorithms need StaticKeys holding only secrets, never a JWKS")
		}
		if hasHMAC, hasAsym := static.hasHMAC(); hasAsym || asymAlg || !hasHMAC {
			return nil, errors.New("auth: HMAC algorithms cannot be mixed with asymmetric keys or algorithms")
		}
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(o.algorithms),
		jwt.WithLeeway(o.leeway),
		jwt.WithTimeFunc(o.now),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithStrictDecoding(),
	}
	if o.issuer != "" {
		popts = append(popts, jwt.WithIssuer(o.issuer))
	}
	if len(o.audience) > 0 {
		popts = append(popts, jwt.WithAudience(o.audience...))
	}
	challenge := "Bearer"
	if o.realm != "" {
		challenge += ` realm="` + quoteSafe(o.realm) + `"`
	}
	return &Verifier{
		keys:        keys,
		parser:      jwt.NewParser(popts...),
		algs:        o.algorithms,
		optional:    o.optional,
		challenge:   challenge,
		route:       o.route,
		routeScopes: o.routeScopes,
	}, nil
}

// MaxTokenBytes bounds what is parsed at all: headers are already limited by the server, but a
// token is base64-decoded and JSON-parsed, so a tighter bound keeps the work per request small. A
// longer token is refused with 401 like any invalid one, as long as the whole header block fits
// the server's header limit (http.Server.MaxHeaderBytes, HTTP_MAX_HEADER_BYTES in chassis): beyond
// it, net/http answers 431 itself, before any handler runs.
const MaxTokenBytes = 16 << 10

var (
	errTooLarge = fmt.Errorf("longer than %d bytes", MaxTokenBytes)
	// errCritical refuses every token with a "crit" header: RFC 7515 §4.1.11 requires rejecting a
	// JWS whose critical extensions are not understood, and this verifier understands none.
	errCritical = errors.New(`"crit" header names extensions this verifier does not support`)
)

// Verify checks token and returns its principal. Every failure wraps ErrInvalidToken (and the jwt
// library's error, or ErrUnknownKey).
func (v *Verifier) Verify(ctx context.Context, token string) (*Principal, error) {
	if len(token) > MaxTokenBytes {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, errTooLarge)
	}
	claims := jwt.MapClaims{}
	_, err := v.parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		if !slices.Contains(v.algs, alg) {
			return nil, fmt.Errorf("algorithm %q not allowed", alg)
		}
		if _, ok := t.Header["crit"]; ok {
			return nil, errCritical
		}
		kid, _ := t.Header["kid"].(string)
		key, err := v.keys.Key(ctx, kid, alg)
		if err != nil {
			return nil, err
		}
		if !fits(key, alg) {
			return nil, fmt.Errorf("%w: key type does not match %s", ErrUnknownKey, alg)
		}
		return key, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	p := &Principal{Method: MethodJWT, Claims: claims}
	p.Subject, _ = claims.GetSubject()
	p.Issuer, _ = claims.GetIssuer()
	p.Audience, _ = claims.GetAudience()
	if exp, _ := claims.GetExpirationTime(); exp != nil {
		p.Expires = exp.Time
	}
	if p.Subject == "" {
		return nil, fmt.Errorf("%w: no sub claim", ErrInvalidToken)
	}
	p.Scopes = scopes(claims)
	return p, nil
}

// scopes reads "scope" (RFC 8693: space-separated string) and "scp" (string or array).
func scopes(c jwt.MapClaims) []string {
	var out []string
	add := func(v any) {
		switch s := v.(type) {
		case string:
			out = append(out, strings.Fields(s)...)
		case []any:
			for _, e := range s {
				if str, ok := e.(string); ok {
					out = append(out, str)
				}
			}
		}
	}
	add(c["scope"])
	add(c["scp"])
	return out
}

// BearerToken returns the token of an "Authorization: Bearer" header (scheme case-insensitive).
func BearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return "", false
	}
	tok := strings.TrimSpace(h[7:])
	return tok, tok != ""
}

// Middleware authenticates each request's bearer token and puts the Principal in its context.
// Without a token it answers 401 (unless WithOptional); with an invalid one, always 401 with
// WWW-Authenticate: Bearer error="invalid_token". Route scopes (WithRouteScopes) answer 403.
// If mTLS already authenticated the connection (PeerIdentity ran first), the token's principal
// records that identity as Peer.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := BearerToken(r)
		if !ok {
			if v.optional && r.Header.Get("Authorization") == "" {
				v.serveScoped(w, r, next)
				return
			}
			v.unauthorized(w, r, "", "missing bearer token")
			return
		}
		p, err := v.Verify(r.Context(), tok)
		if err != nil {
			v.unauthorized(w, r, "invalid_token", describe(err))
			return
		}
		if peer, ok := PrincipalFrom(r.Context()); ok && peer.Method == MethodMTLS {
			p.Peer = peer.Subject
		}
		v.serveScoped(w, r.WithContext(WithPrincipal(r.Context(), p)), next)
	})
}

func (v *Verifier) serveScoped(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if v.routeScopes != nil {
		if need, ok := v.routeScopes[v.route(r)]; ok && !checkScopes(w, r, need, v.challenge) {
			return
		}
	}
	next.ServeHTTP(w, r)
}

// describe turns a verification error into an error_description safe to show the client: which
// check failed, never key material.
func describe(err error) string {
	switch {
	case errors.Is(err, errTooLarge):
		return "token too large"
	case errors.Is(err, errCritical):
		return "unsupported critical header"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "required claim missing"
	case errors.Is(err, ErrUnknownKey):
		return "unknown signing key"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid) && strings.Contains(err.Error(), "signing method"):
		// The jwt library reports a method outside WithValidMethods as a signature error.
		return "algorithm not allowed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	}
	return "token rejected"
}

func (v *Verifier) unauthorized(w http.ResponseWriter, r *http.Request, code, desc string) {
	c := v.challenge
	if code != "" {
		sep := ", "
		if c == "Bearer" {
			sep = " "
		}
		c += sep + `error="` + code + `", error_description="` + quoteSafe(desc) + `"`
	}
	w.Header().Set("WWW-Authenticate", c)
	problem.Write(w, http.StatusUnauthorized, "", desc)
}

// RequireScopes returns middleware for one route that answers 403 unless the request's principal
// has every one of scopes (401 when there is no principal at all).
func RequireScopes(scopes ...string) func(http.Handler) http.Handler {
	need := append([]string(nil), scopes...)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if checkScopes(w, r, need, "Bearer") {
				next.ServeHTTP(w, r)
			}
		})
	}
}

// RequireClaim returns middleware for one route that answers 403 unless the principal's claim name
// equals one of values (a string claim) or contains one of them (an array claim).
func RequireClaim(name string, values ...string) func(http.Handler) http.Handler {
	want := append([]string(nil), values...)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := PrincipalFrom(r.Context())
			if !ok {
				w.Header().Set("WWW-Authenticate", "Bearer")
				problem.Write(w, http.StatusUnauthorized, "", "authentication required")
				return
			}
			if !claimMatches(p.Claims[name], want) {
				problem.Write(w, http.StatusForbidden, "", "claim "+name+" does not allow this request")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func claimMatches(v any, want []string) bool {
	switch c := v.(type) {
	case string:
		return slices.Contains(want, c)
	case []any:
		for _, e := range c {
			if s, ok := e.(string); ok && slices.Contains(want, s) {
				return true
			}
		}
	case bool:
		return slices.Contains(want, fmt.Sprint(c))
	}
	return false
}

func checkScopes(w http.ResponseWriter, r *http.Request, need []string, challenge string) bool {
	p, ok := PrincipalFrom(r.Context())
	if !ok {
		w.Header().Set("WWW-Authenticate", challenge)
		problem.Write(w, http.StatusUnauthorized, "", "authentication required")
		return false
	}
	for _, s := range need {
		if !p.HasScope(s) {
			sep := ", "
			if challenge == "Bearer" {
				sep = " "
			}
			w.Header().Set("WWW-Authenticate", challenge+sep+`error="insufficient_scope", scope="`+quoteSafe(strings.Join(need, " "))+`"`)
			problem.Write(w, http.StatusForbidden, "", "scope "+s+" required")
			return false
		}
	}
	return true
}

// quoteSafe drops characters that cannot appear in an auth-param quoted-string.
func quoteSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '"' || r == '\\' || r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, s)
}
