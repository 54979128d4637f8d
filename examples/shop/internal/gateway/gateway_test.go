package gateway_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/chassistest"
	"github.com/cloudchassis/kit/examples/shop/internal/cart"
	"github.com/cloudchassis/kit/examples/shop/internal/catalog"
	"github.com/cloudchassis/kit/examples/shop/internal/gateway"
	"github.com/cloudchassis/kit/examples/shop/internal/pricing"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, chassistest.LeakOptions()...) }

// shopCluster starts catalog, pricing and cart (callees first), then the gateway with env.
func shopCluster(t *testing.T, env map[string]string, opts ...chassistest.Option) (*chassistest.Cluster, *chassistest.Instance) {
	t.Helper()
	c := chassistest.NewCluster(t, opts...)
	var cc catalog.Config
	c.Start(catalog.Name, catalog.Setup(&cc), chassistest.WithChassisOptions(catalog.Options(&cc)...),
		chassistest.WithEnv(map[string]string{"INSTANCE_ID": "catalog-1"}))
	var pc pricing.Config
	c.Start(pricing.Name, pricing.Setup(&pc), chassistest.WithChassisOptions(pricing.Options(&pc)...),
		chassistest.WithEnv(map[string]string{"INSTANCE_ID": "pricing-1"}))
	var kc cart.Config
	c.Start(cart.Name, cart.Setup(&kc), chassistest.WithChassisOptions(cart.Options(&kc)...),
		chassistest.WithEnv(map[string]string{"INSTANCE_ID": "cart-1"}))
	g := gateway.New()
	e := map[string]string{"INSTANCE_ID": "gateway-1"}
	for k, v := range env {
		e[k] = v
	}
	gw := c.Start(gateway.Name, g.Setup, chassistest.WithChassisOptions(g.Options()...), chassistest.WithEnv(e))
	return c, gw
}

func TestProduct(t *testing.T) {
	_, gw := shopCluster(t, nil)
	res, body := gw.Get(t, "/products/p-002")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	var p shop.PricedProduct
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatal(err)
	}
	if p.Name != "Burr grinder" || p.Price == nil || *p.Price != pricing.PriceOf("p-002", "EUR") || p.PriceUnavailable {
		t.Errorf("product %+v", p)
	}
	if got := res.Header.Get(shop.HeaderServedBy); !strings.HasPrefix(got, "gateway-1 ") ||
		!strings.Contains(got, "catalog-1") || !strings.Contains(got, "pricing-1") {
		t.Errorf("X-Served-By %q", got)
	}
	if res, _ := gw.Get(t, "/products/nope"); res.StatusCode != http.StatusNotFound {
		t.Errorf("unknown product: %d, want 404 from catalog", res.StatusCode)
	}
	if res, _ := gw.Get(t, "/products/a%20b"); res.StatusCode != http.StatusBadRequest {
		t.Errorf("bad id: %d, want 400", res.StatusCode)
	}
}

func TestProducts(t *testing.T) {
	_, gw := shopCluster(t, nil)
	res, body := gw.Get(t, "/products")
	var ps []shop.PricedProduct
	if err := json.Unmarshal([]byte(body), &ps); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	if len(ps) != len(catalog.Products()) {
		t.Errorf("%d products", len(ps))
	}
	for _, p := range ps {
		if p.Price == nil || p.Price.ProductID != p.ID {
			t.Errorf("%s priced %+v", p.ID, p.Price)
		}
	}
	if res.Header.Get(shop.HeaderDegraded) != "" {
		t.Error("degraded without a failure")
	}
}

func TestCart(t *testing.T) {
	_, gw := shopCluster(t, nil)
	add := func(user, body string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodPost, "/cart/"+user+"/items", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		return gw.Do(t, req)
	}
	if res, body := add("ann", `{"product_id":"p-001","quantity":1}`); res.StatusCode != http.StatusOK {
		t.Fatalf("add: %d %s", res.StatusCode, body)
	}
	add("ann", `{"product_id":"p-001","quantity":2}`)
	res, body := gw.Get(t, "/cart/ann")
	var c shop.Cart
	if err := json.Unmarshal([]byte(body), &c); err != nil || res.StatusCode != http.StatusOK || len(c.Items) != 1 || c.Items[0].Quantity != 3 || c.Instance != "cart-1" {
		t.Errorf("cart: %d %s", res.StatusCode, body)
	}
	if res, _ := add("ann", `{"product_id":"p-001","quantity":0}`); res.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("quantity 0: %d, want 422 (validated at the gateway)", res.StatusCode)
	}
}

// The failure scenario: pricing stops answering. The gateway gives up on it after
// GATEWAY_PRICING_TIMEOUT and answers the product without a price (X-Degraded: pricing); with the
// fallback off it answers 504. In a synctest bubble with in-memory calls, the 300 ms pass on the
// bubble's clock: exact, and the test takes milliseconds. In-memory calls are HTTP, so the gateway
// calls pricing over HTTP here (TestPricingDownOverGRPC covers the gRPC path).
func TestPricingTimesOut(t *testing.T) {
	for _, fallback := range []bool{true, false} {
		t.Run(map[bool]string{true: "fallback", false: "no fallback"}[fallback], func(t *testing.T) {
			env := map[string]string{"GATEWAY_PRICING_FALLBACK": map[bool]string{true: "true", false: "false"}[fallback],
				"GATEWAY_PRICING_PROTOCOL": gateway.ProtocolHTTP}
			c, gw := shopCluster(t, env, chassistest.InMemory())
			c.Link(gateway.Name, pricing.Name).Set(chassistest.Blackhole())
			wall := time.Now()
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				res, body := gw.Get(t, "/products/p-001")
				took := time.Since(start)
				if took != 300*time.Millisecond {
					t.Errorf("answered after %v of bubble time, want the 300ms pricing timeout", took)
				}
				if !fallback {
					if res.StatusCode != http.StatusGatewayTimeout {
						t.Errorf("%d %s, want 504", res.StatusCode, body)
					}
					return
				}
				var p shop.PricedProduct
				if err := json.Unmarshal([]byte(body), &p); err != nil || res.StatusCode != http.StatusOK {
					t.Fatalf("%d %s", res.StatusCode, body)
				}
				if p.Price != nil || !p.PriceUnavailable || p.Name == "" || res.Header.Get(shop.HeaderDegraded) != "pricing" {
					t.Errorf("degraded answer: %+v, X-Degraded %q", p, res.Header.Get(shop.HeaderDegraded))
				}
			})
			if took := time.Since(wall); took > 2*time.Second {
				t.Errorf("took %v of wall time: the timeout did not run on synctest's clock", took)
			}
			if c.Link(gateway.Name, pricing.Name).Requests() == 0 {
				t.Error("the gateway never called pricing")
			}
		})
	}
}

// Over gRPC (the default), prices come from pricing's gRPC API with the answering instance named;
// when pricing is gone, the gateway answers without a price (fallback) or 502 (no fallback).
func TestPricingDownOverGRPC(t *testing.T) {
	for _, fallback := range []bool{true, false} {
		t.Run(map[bool]string{true: "fallback", false: "no fallback"}[fallback], func(t *testing.T) {
			c, gw := shopCluster(t, map[string]string{"GATEWAY_PRICING_FALLBACK": strconv.FormatBool(fallback)})
			res, body := gw.Get(t, "/products")
			var ps []shop.PricedProduct
			if err := json.Unmarshal([]byte(body), &ps); err != nil || res.StatusCode != http.StatusOK || len(ps) == 0 ||
				ps[0].Price == nil || *ps[0].Price != pricing.PriceOf(ps[0].ID, "EUR") {
				t.Fatalf("with pricing up: %d %s", res.StatusCode, body)
			}
			if got := res.Header.Get(shop.HeaderServedBy); !strings.Contains(got, "pricing-1") {
				t.Errorf("X-Served-By %q: the gRPC answer's x-instance is missing", got)
			}
			c.Instances(pricing.Name)[0].Stop(t)
			res, body = gw.Get(t, "/products/p-001")
			if !fallback {
				if res.StatusCode != http.StatusBadGateway {
					t.Errorf("pricing gone, no fallback: %d %s, want 502", res.StatusCode, body)
				}
				return
			}
			var p shop.PricedProduct
			if err := json.Unmarshal([]byte(body), &p); err != nil || res.StatusCode != http.StatusOK ||
				p.Price != nil || !p.PriceUnavailable || res.Header.Get(shop.HeaderDegraded) != "pricing" {
				t.Errorf("pricing gone: %d %s, X-Degraded %q", res.StatusCode, body, res.Header.Get(shop.HeaderDegraded))
			}
		})
	}
}

// With authentication on, a cart needs the owner's token; the catalog stays public.
func TestAuthentication(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks := `{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","kid":"k1","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}]}`
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, []byte(jwks), 0o600); err != nil {
		t.Fatal(err)
	}
	_, gw := shopCluster(t, map[string]string{
		"AUTH_JWKS_FILE": path, "AUTH_ISSUER": "https://iss.test/", "AUTH_AUDIENCE": "shop",
		"AUTH_ALGORITHMS": "EdDSA", "AUTH_OPTIONAL": "true",
	})
	token := func(sub string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
			"iss": "https://iss.test/", "aud": "shop", "sub": sub, "exp": time.Now().Add(time.Hour).Unix(),
		})
		tok.Header["kid"] = "k1"
		s, err := tok.SignedString(priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	get := func(path, tok string) int {
		req, _ := http.NewRequest(http.MethodGet, path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, _ := gw.Do(t, req)
		return res.StatusCode
	}
	if got := get("/products/p-001", ""); got != http.StatusOK {
		t.Errorf("anonymous catalog: %d, want 200", got)
	}
	if got := get("/cart/ann", ""); got != http.StatusUnauthorized {
		t.Errorf("anonymous cart: %d, want 401", got)
	}
	if got := get("/cart/ann", token("bob")); got != http.StatusForbidden {
		t.Errorf("bob reading ann's cart: %d, want 403", got)
	}
	if got := get("/cart/ann", token("ann")); got != http.StatusOK {
		t.Errorf("ann's own cart: %d, want 200", got)
	}
	if got := get("/cart/ann", token("ann")+"x"); got != http.StatusUnauthorized {
		t.Errorf("tampered token: %d, want 401", got)
	}
}
