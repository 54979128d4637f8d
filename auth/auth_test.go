package auth_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/auth"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	issuer   = "https://issuer.test/"
	audience = "orders"
)

var (
	keyOnce          sync.Once
	signKey, rogueRS *rsa.PrivateKey
)

func keys(t testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	keyOnce.Do(func() {
		var err error
		if signKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rogueRS, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return signKey, rogueRS
}

func jwksJSON(kid string, pub *rsa.PublicKey) []byte {
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
	return b
}

// jwksServer serves a key set and counts fetches; fail makes it answer 500.
type jwksServer struct {
	*httptest.Server
	fetches atomic.Int64
	fail    atomic.Bool
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		if s.fail.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

// clock is an injected clock the test moves by hand.
type clock struct{ ns atomic.Int64 }

func newClock() *clock                   { c := &clock{}; c.ns.Store(time.Now().UnixNano()); return c }
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func claims(now time.Time, mod func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{
		"iss": issuer, "aud": audience, "sub": "user-1", "scope": "orders:read orders:write",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func sign(t testing.TB, m jwt.SigningMethod, kid string, key any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func whoami(w http.ResponseWriter, r *http.Request) {
	p, ok := auth.PrincipalFrom(r.Context())
	if !ok {
		fmt.Fprint(w, "anonymous")
		return
	}
	fmt.Fprintf(w, "%s via %s", p.Subject, p.Method)
}

func call(h http.Handler, token string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/orders", nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

func TestForgedTokensAreRejected(t *testing.T) {
	key, rogue := keys(t)
	srv := newJWKSServer(t, jwksJSON("k1", &key.PublicKey))
	clk := newClock()
	jwks := must(auth.NewJWKS(srv.URL, auth.WithMinRefresh(time.Minute), auth.WithClock(clk.Now)))
	v, err := auth.NewVerifier(jwks, auth.WithIssuer(issuer), auth.WithAudience(audience), auth.WithClock(clk.Now), auth.WithLeeway(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	h := v.Middleware(http.HandlerFunc(whoami))
	now := clk.Now()

	valid := sign(t, jwt.SigningMethodRS256, "k1", key, claims(now, nil))
	if rec := call(h, valid); rec.Code != 200 || rec.Body.String() != "user-1 via jwt" {
		t.Fatalf("valid token: %d %s", rec.Code, rec.Body)
	}
	if n := srv.fetches.Load(); n != 1 {
		t.Fatalf("%d JWKS fetches for the first token, want 1", n)
	}

	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&key.PublicKey))})
	noneTok := sign(t, jwt.SigningMethodNone, "k1", jwt.UnsafeAllowNoneSignatureType, claims(now, nil))
	parts := strings.Split(valid, ".")
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","iss":"`+issuer+`","aud":"orders","exp":9999999999}`)) + "." + parts[2]

	forged := []struct {
		name, token, desc string
	}{
		{"alg none", noneTok, "algorithm not allowed"},
		{"alg none, empty signature", strings.TrimSuffix(noneTok, "."), "malformed token"},
		{"HS256 signed with the RSA public key", sign(t, jwt.SigningMethodHS256, "k1", pubPEM, claims(now, nil)), "algorithm not allowed"},
		{"HS256 signed with the RSA modulus", sign(t, jwt.SigningMethodHS256, "k1", key.N.Bytes(), claims(now, nil)), "algorithm not allowed"},
		{"expired", sign(t, jwt.SigningMethodRS256, "k1", key, claims(now, func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() })), "token expired"},
		{"no exp", sign(t, jwt.SigningMethodRS256, "k1", key, claims(now, func(c jwt.MapClaims) { delete(c, "exp") })), "required claim missing"},
		{"not yet valid", sign(t, jwt.SigningMethodRS256, "k1", key, claims(now, func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Minute).Unix() })), "token not valid yet"},
		{"wrong iss", sign(t, jwt.SigningMethodRS256, "k1", key, claims(now, func(c jwt.MapClaims) { c["iss"] = "https://evil.test/" })), "wrong issuer"},
		{"wrong aud", sign(t, jwt.SigningMethodRS256, "k1", key, claims(now, func(c jwt.MapClaims) { c["aud"] = "billing" })), "wrong audience"},
		{"bad signature (other key, same kid)", sign(t, jwt.SigningMethodRS256, "k1", rogue, claims(now, nil)), "bad signature"},
		{"tampered payload", tampered, "bad signature"},
		{"unknown kid", sign(t, jwt.SigningMethodRS256, "nope", rogue, claims(now, nil)), "unknown signing key"},
		{"garbage", "not.a.token", "malformed token"},
		{"unknown critical extension", signWith(t, key, func(tok *jwt.Token) {
			tok.Header["crit"] = []string{"https://ext.example/nonce"}
			tok.Header["https://ext.example/nonce"] = "x"
		}, claims(now, nil)), "unsupported critical header"},
		{"crit naming a standard claim", signWith(t, key, func(tok *jwt.Token) { tok.Header["crit"] = []string{"exp"} }, claims(now, nil)), "unsupported critical header"},
		{"over 16 KiB", sign(t, jwt.SigningMethodRS256, "k1", key, claims(now, func(c jwt.MapClaims) { c["pad"] = strings.Repeat("a", auth.MaxTokenBytes) })), "token too large"},
	}
	for _, f := range forged {
		t.Run(f.name, func(t *testing.T) {
			rec := call(h, f.token)
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401 (%s)", rec.Code, rec.Body)
			}
			want := `Bearer error="invalid_token", error_description="` + f.desc + `"`
			if got := rec.Header().Get("WWW-Authenticate"); got != want {
				t.Errorf("WWW-Authenticate = %q, want %q", got, want)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}

	t.Run("unknown kid flood", func(t *testing.T) {
		// A forger does not need a valid signature to make the server look a key id up: reuse the
		// valid token's payload and signature under new key ids.
		body := valid[strings.IndexByte(valid, '.'):]
		before := srv.fetches.Load()
		var wg sync.WaitGroup
		var accepted atomic.Int64
		for g := range 20 {
			wg.Go(func() {
				for i := range 50 {
					tok := withKid(body, fmt.Sprintf("forged-%d-%d", g, i))
					if call(h, tok).Code != http.StatusUnauthorized {
						accepted.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if accepted.Load() != 0 {
			t.Fatalf("%d forged tokens accepted", accepted.Load())
		}
		// The key set was fetched for the first token less than a minute ago: the flood of 1000
		// unknown kids makes no fetch at all.
		if n := srv.fetches.Load() - before; n != 0 {
			t.Fatalf("%d JWKS fetches during the flood, want 0 within the refresh interval", n)
		}
		// After the interval, the next flood makes exactly one.
		clk.Advance(time.Minute + time.Second)
		for i := range 1000 {
			tok := withKid(body, fmt.Sprintf("later-%d", i))
			if call(h, tok).Code != http.StatusUnauthorized {
				t.Fatal("forged token accepted")
			}
		}
		if n := srv.fetches.Load() - before; n != 1 {
			t.Fatalf("%d JWKS fetches for 1000 unknown kids in one interval, want 1", n)
		}
	})

	t.Run("stale keys served while the JWKS endpoint fails", func(t *testing.T) {
		srv.fail.Store(true)
		defer srv.fail.Store(false)
		clk.Advance(2 * time.Minute)
		if err := jwks.Refresh(context.Background()); err == nil {
			t.Fatal("refresh against a failing endpoint succeeded")
		}
		if jwks.Err() == nil {
			t.Fatal("Err() does not report the failed fetch")
		}
		tok := sign(t, jwt.SigningMethodRS256, "k1", key, claims(clk.Now(), nil))
		if rec := call(h, tok); rec.Code != 200 {
			t.Fatalf("known key refused after a failed fetch: %d %s", rec.Code, rec.Body)
		}
	})

	t.Run("missing token", func(t *testing.T) {
		rec := call(h, "")
		if rec.Code != 401 || rec.Header().Get("WWW-Authenticate") != "Bearer" {
			t.Fatalf("%d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	})
}

// signWith signs an RS256 token with kid k1 after mod has changed its header.
func signWith(t testing.TB, key *rsa.PrivateKey, mod func(*jwt.Token), c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	tok.Header["kid"] = "k1"
	mod(tok)
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func withKid(rest, kid string) string {
	h, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid})
	return base64.RawURLEncoding.EncodeToString(h) + rest
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestScopesAndClaims(t *testing.T) {
	key, _ := keys(t)
	v, err := auth.NewVerifier(auth.StaticKeys{"k1": &key.PublicKey}, auth.WithOptional(true),
		auth.WithRealm("shop"), auth.WithRouteScopes(map[string][]string{"DELETE /orders": {"orders:admin"}}),
		auth.WithRouteFunc(func(r *http.Request) string { return r.Method + " " + r.URL.Path }))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /orders", http.HandlerFunc(whoami))
	mux.Handle("POST /orders", auth.RequireScopes("orders:write")(http.HandlerFunc(whoami)))
	mux.Handle("DELETE /orders", http.HandlerFunc(whoami))
	mux.Handle("GET /tenant", auth.RequireClaim("tenant", "acme")(http.HandlerFunc(whoami)))
	h := v.Middleware(mux)
	now := time.Now()
	tok := sign(t, jwt.SigningMethodRS256, "k1", key, claims(now, func(c jwt.MapClaims) { c["scope"] = "orders:read"; c["tenant"] = "acme" }))
	do := func(method, path, token string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, nil)
		if token != "" {
			r.Header.Set("Authorization", "bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		return rec
	}
	if rec := do("GET", "/orders", ""); rec.Code != 200 || rec.Body.String() != "anonymous" {
		t.Fatalf("optional auth, no token: %d %s", rec.Code, rec.Body)
	}
	if rec := do("GET", "/orders", "x.y.z"); rec.Code != 401 {
		t.Fatalf("optional auth must still refuse a bad token: %d", rec.Code)
	}
	if rec := do("POST", "/orders", ""); rec.Code != 401 {
		t.Fatalf("scoped route without token: %d", rec.Code)
	}
	rec := do("POST", "/orders", tok)
	if rec.Code != 403 || rec.Header().Get("WWW-Authenticate") != `Bearer error="insufficient_scope", scope="orders:write"` {
		t.Fatalf("missing scope: %d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
	rec = do("DELETE", "/orders", tok)
	if rec.Code != 403 || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), `Bearer realm="shop", error="insufficient_scope"`) {
		t.Fatalf("route scope: %d %q", rec.Code, rec.Header().Get("WWW-Authenticate"))
	}
	if rec := do("GET", "/tenant", tok); rec.Code != 200 {
		t.Fatalf("claim match: %d", rec.Code)
	}
	other := sign(t, jwt.SigningMethodRS256, "k1", key, claims(now, func(c jwt.MapClaims) { c["tenant"] = "evil" }))
	if rec := do("GET", "/tenant", other); rec.Code != 403 {
		t.Fatalf("claim mismatch: %d", rec.Code)
	}
}

func TestVerifierRefusesUnsafeConfigurations(t *testing.T) {
	key, _ := keys(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	cases := map[string]struct {
		keys auth.KeySet
		opts []auth.Option
	}{
		"none":              {auth.StaticKeys{"k": &key.PublicKey}, []auth.Option{auth.WithAlgorithms("none")}},
		"HS with JWKS":      {must(auth.NewJWKS("http://127.0.0.1:1/")), []auth.Option{auth.WithAlgorithms("HS256")}},
		"HS with RSA key":   {auth.StaticKeys{"k": &key.PublicKey}, []auth.Option{auth.WithAlgorithms("HS256")}},
		"HS mixed with RS":  {auth.StaticKeys{"k": secret}, []auth.Option{auth.WithAlgorithms("HS256", "RS256")}},
		"mixed keys":        {auth.StaticKeys{"k": secret, "r": &key.PublicKey}, []auth.Option{auth.WithAlgorithms("HS256")}},
		"empty algorithms":  {auth.StaticKeys{"k": &key.PublicKey}, []auth.Option{auth.WithAlgorithms()}},
		"unknown algorithm": {auth.StaticKeys{"k": &key.PublicKey}, []auth.Option{auth.WithAlgorithms("XX1")}},
	}
	for name, c := range cases {
		if _, err := auth.NewVerifier(c.keys, c.opts...); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// HMAC with static secrets only is allowed, and an RS token is then refused.
	v, err := auth.NewVerifier(auth.StaticKeys{"s": secret}, auth.WithAlgorithms("HS256"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, "s", secret, claims(now, nil))); err != nil {
		t.Fatalf("HS256 with a static secret: %v", err)
	}
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, "s", key, claims(now, nil))); err == nil {
		t.Fatal("RS256 token accepted by an HS-only verifier")
	}
}

func TestParseJWKS(t *testing.T) {
	key, _ := keys(t)
	got, err := auth.ParseJWKS(jwksJSON("k1", &key.PublicKey))
	if err != nil || len(got.Keys) != 1 || len(got.Rejected) != 0 || got.Keys[0].KeyID != "k1" || !got.Keys[0].Key.(*rsa.PublicKey).Equal(&key.PublicKey) {
		t.Fatalf("%+v %v", got, err)
	}
	skipped := `{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"},{"kty":"RSA","use":"enc","n":"AQAB","e":"AQAB"},{"kty":"OKP","crv":"X25519","x":"AA"}]}`
	if got, err := auth.ParseJWKS([]byte(skipped)); err != nil || len(got.Keys) != 0 || len(got.Rejected) != 0 {
		t.Fatalf("symmetric, encryption and X25519 keys must be ignored: %+v %v", got, err)
	}
	for _, bad := range []string{`{}`, `[]`, `{"keys":{}}`, "root:x:0:0:secret"} {
		_, err := auth.ParseJWKS([]byte(bad))
		if err == nil {
			t.Errorf("%s: accepted", bad)
		} else if strings.Contains(err.Error(), "root") || strings.Contains(err.Error(), "'") {
			t.Errorf("%s: the error quotes the document: %v", bad, err)
		}
	}
	// Bad keys of a known type are skipped and reported, never fatal to the set.
	for _, bad := range []string{`{"kty":"RSA","n":"AQAB","e":"AQAB"}`, `{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}`, `{"kty":"EC","crv":"P-192","x":"AA","y":"AA"}`, `7`} {
		got, err := auth.ParseJWKS([]byte(`{"keys":[` + bad + `]}`))
		if err != nil || len(got.Keys) != 0 || len(got.Rejected) != 1 {
			t.Errorf("%s: %+v %v, want one rejected key", bad, got, err)
		}
	}
}

func FuzzParseJWKS(f *testing.F) {
	key, _ := keys(f)
	f.Add(jwksJSON("k1", &key.PublicKey))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := auth.ParseJWKS(data)
		if err != nil {
			return
		}
		for _, r := range set.Rejected {
			if r.Err == nil {
				t.Fatalf("rejected key %d without a reason", r.Index)
			}
		}
		for _, k := range set.Keys {
			if k.Key == nil {
				t.Fatalf("nil key for kid %q", k.KeyID)
			}
			if _, ok := k.Key.([]byte); ok {
				t.Fatal("a JWKS yielded an HMAC secret")
			}
		}
	})
}

// FuzzVerify feeds arbitrary strings and mutations of a valid token to the verifier: it must never
// panic and never accept anything but the exact valid token.
func FuzzVerify(f *testing.F) {
	key, _ := keys(f)
	now := time.Now()
	valid := sign(f, jwt.SigningMethodRS256, "k1", key, claims(now, nil))
	v, err := auth.NewVerifier(auth.StaticKeys{"k1": &key.PublicKey}, auth.WithIssuer(issuer), auth.WithAudience(audience))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")
	f.Add(strings.Replace(valid, ".", "..", 1))
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := v.Verify(context.Background(), tok)
		if err == nil && tok != valid {
			// Base64 padding and such cannot make a different string verify: strict decoding is on.
			t.Fatalf("accepted a token that differs from the valid one: %q (sub %q)", tok, p.Subject)
		}
	})
}

func ExampleVerifier() {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	v, _ := auth.NewVerifier(auth.StaticKeys{"k1": &key.PublicKey}, auth.WithIssuer("https://issuer.example/"))
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("hello", auth.Subject(r.Context()))
	}))
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": "https://issuer.example/", "sub": "alice", "exp": time.Now().Add(time.Hour).Unix(),
	})
	tok.Header["kid"] = "k1"
	signed, _ := tok.SignedString(key)

	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer "+signed)
	h.ServeHTTP(httptest.NewRecorder(), r)

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	fmt.Println(rec.Code, rec.Header().Get("WWW-Authenticate"))
	// Output:
	// hello alice
	// 401 Bearer
}

func TestJWKSFetchSurvivesCanceledRequest(t *testing.T) {
	key, _ := keys(t)
	srv := newJWKSServer(t, jwksJSON("k1", &key.PublicKey))
	jwks := must(auth.NewJWKS(srv.URL))
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the first caller has already gone away: it cannot wait, but its fetch goes on
	if _, err := jwks.Key(ctx, "k1", "RS256"); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("fetch made for a canceled request: %v", err)
	}
	if _, err := jwks.Key(context.Background(), "k1", "RS256"); err != nil || srv.fetches.Load() != 1 {
		t.Fatalf("err %v, fetches %d", err, srv.fetches.Load())
	}
	// Run refreshes until its context ends, then returns.
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- jwks.Run(rctx) }()
	for srv.fetches.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	rcancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
