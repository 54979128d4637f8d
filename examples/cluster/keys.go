package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Identity of the demo's token issuer.
const (
	demoIssuer   = "https://issuer.shop.example/"
	demoAudience = "shop"
	demoKeyID    = "demo-1"
)

// issuer signs the load generator's bearer tokens with a key generated for this run; the gateway
// verifies them against the JWKS file the issuer writes (AUTH_JWKS_FILE).
type issuer struct {
	key      ed25519.PrivateKey
	jwksPath string
}

func newIssuer(dir string) (*issuer, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	jwks := map[string]any{"keys": []map[string]string{{
		"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": demoKeyID,
		"x": base64.RawURLEncoding.EncodeToString(pub),
	}}}
	data, err := json.Marshal(jwks)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return nil, err
	}
	return &issuer{key: priv, jwksPath: path}, nil
}

// token returns a bearer token for user, valid for ttl.
func (i *issuer) token(user string, ttl time.Duration) (string, error) {
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"iss": demoIssuer, "aud": demoAudience, "sub": user,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
		"scope": "cart:read cart:write",
	})
	t.Header["kid"] = demoKeyID
	s, err := t.SignedString(i.key)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}

// gatewayEnv configures the gateway's chassis settings to verify the issuer's tokens (optional for
// the catalog routes, required and scoped for the carts) and to rate-limit cart writes per user.
func (i *issuer) gatewayEnv() []string {
	return []string{
		"AUTH_JWKS_FILE=" + i.jwksPath, "AUTH_ISSUER=" + demoIssuer, "AUTH_AUDIENCE=" + demoAudience,
		"AUTH_ALGORITHMS=EdDSA", "AUTH_OPTIONAL=true",
		"AUTH_ROUTE_SCOPES=GET /cart/{user}=cart:read; POST /cart/{user}/items=cart:write",
		"RATE_LIMIT_ROUTES=POST /cart/{user}/items=20:40",
	}
}
