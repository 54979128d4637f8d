// Package auth authenticates requests: JWT bearer tokens verified against a JWKS endpoint or static
// keys, and mutual TLS with certificates reloaded from disk without a restart. Whoever is
// authenticated travels in the request context as a *Principal.
//
// Start with Verifier for bearer tokens:
//
//	keys := auth.NewJWKS("https://issuer.example/.well-known/jwks.json")
//	go keys.Run(ctx) // background refresh, stops with ctx
//	v, err := auth.NewVerifier(keys, auth.WithIssuer("https://issuer.example/"), auth.WithAudience("orders"))
//	handler = v.Middleware(mux)
//	mux.Handle("POST /orders", auth.RequireScopes("orders:write")(createOrder))
//
// and with Reloader (TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE, TLS_CLIENT_AUTH) plus
// PeerIdentity for mTLS. ClientReloader (the CAs a client trusts and the certificate it presents,
// reloaded the same way) and Dialer make the client side. Failures answer 401 with WWW-Authenticate (RFC 6750) or 403 for a missing
// scope, both as application/problem+json.
package auth
