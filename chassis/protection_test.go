package chassis_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/chassis"
)

// TestProtectionFromEnvironment: AUTH_JWKS_FILE turns bearer tokens on for every route and
// RATE_LIMIT_RPS limits each verified subject on its own.
func TestProtectionFromEnvironment(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pad := func(b []byte) string {
		out := make([]byte, 32)
		copy(out[32-len(b):], b)
		return base64.RawURLEncoding.EncodeToString(out)
	}
	jwks, _ := json.Marshal(map[string]any{"keys": []any{map[string]string{
		"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
		"x": pad(key.X.Bytes()), "y": pad(key.Y.Bytes()),
	}}})
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	token := func(sub string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
			"sub": sub, "iss": "https://issuer.test", "aud": "shop", "exp": time.Now().Add(time.Hour).Unix(),
		})
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	svc, err := chassis.New("shop", chassis.WithEnv(env(
		"AUTH_JWKS_FILE", file, "AUTH_ISSUER", "https://issuer.test", "AUTH_AUDIENCE", "shop",
		"RATE_LIMIT_RPS", "1", "RATE_LIMIT_BURST", "2")))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleFunc("GET /me", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, auth.Subject(r.Context()))
	})
	start(t, svc)
	call := func(tok string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+svc.Addr()+"/me", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, _ := call(""); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := call("not.a.token"); code != 401 {
		t.Fatalf("garbage token: %d", code)
	}
	alice, bob := token("alice"), token("bob")
	if code, body := call(alice); code != 200 || body != "alice" {
		t.Fatalf("alice: %d %q", code, body)
	}
	call(alice)
	if code, _ := call(alice); code != 429 {
		t.Fatalf("alice over her burst: %d, want 429", code)
	}
	if code, body := call(bob); code != 200 || body != "bob" {
		t.Fatalf("bob must keep his own allowance: %d %q", code, body)
	}
}
