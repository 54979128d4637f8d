package auth

import (
	"context"
	"slices"
	"time"
)

// Principal is an authenticated caller.
type Principal struct {
	// Subject names the caller: the token's "sub", or the peer certificate's identity (first URI
	// SAN, such as a SPIFFE id, else first DNS SAN, else the common name).
	Subject string
	// Method is MethodJWT or MethodMTLS.
	Method string
	// Issuer is the token's "iss" or the peer certificate's issuer.
	Issuer string
	// Audience is the token's "aud".
	Audience []string
	// Scopes are the token's "scope" (space-separated) or "scp" values.
	Scopes []string
	// Expires is when the credential stops being valid.
	Expires time.Time
	// Peer is the mTLS identity of the connection when a token authenticated the request over it
	// (the service that forwarded an end user's token).
	Peer string
	// Claims holds every claim of a token (nil for mTLS). Treat it as read-only.
	Claims map[string]any
}

// Authentication methods.
const (
	MethodJWT  = "jwt"
	MethodMTLS = "mtls"
)

// HasScope reports whether p was granted scope.
func (p *Principal) HasScope(scope string) bool { return slices.Contains(p.Scopes, scope) }

type principalKey struct{}

// WithPrincipal returns a copy of ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal that authenticated the request whose context ctx is.
func PrincipalFrom(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok && p != nil
}

// Subject returns the authenticated subject in ctx, or "" for an anonymous request. Its signature
// fits guard.KeyContext, to rate-limit by caller.
func Subject(ctx context.Context) string {
	if p, ok := PrincipalFrom(ctx); ok {
		return p.Subject
	}
	return ""
}
