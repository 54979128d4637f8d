// Package auth authenticates requests: JWT bearer tokens verified against a JWKS endpoint or static
// keys, and mutual TLS with certificates reloaded from disk without a restart. Whoever is
// authenticated travels in the request context as a *Principal.
//
// Start with Verifier for bearer tokens:
//
//	keys, err := auth.NewJWKS("https://issuer.example/.well-known/jwks.json",
//		auth.WithMeterProvider(mp), auth.WithLogger(logger))
//	go keys.Run(ctx)   // background refresh, stops with ctx
//	defer keys.Close() // after Run has returned: ends a fetch still running
//	v, err := auth.NewVerifier(keys, auth.WithIssuer("https://issuer.example/"), auth.WithAudience("orders"))
//	handler = v.Middleware(mux)
//	mux.Handle("POST /orders", auth.RequireScopes("orders:write")(createOrder))
//
// A JWKS serves known keys from memory and fetches at most once at a time, bounded in time, so a
// hung issuer never holds requests for long; keys it cannot use are skipped and reported, and
// JWKS.Ready is the readiness check (nil once a key set has loaded). Config builds all of it from
// AUTH_* variables.
//
// For mTLS use Reloader (TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE, TLS_CLIENT_AUTH) plus
// PeerIdentity; ClientReloader (the CAs a client trusts and the certificate it presents, reloaded
// the same way) and Dialer make the client side. Files are read only when they are regular files of bounded size; their errors are
// *config.Problem and never show the content. Failures answer 401 with WWW-Authenticate (RFC 6750)
// or 403 for a missing scope, both as application/problem+json.
package auth
