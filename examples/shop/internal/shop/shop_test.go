package shop_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/examples/shop/internal/shop"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidID(t *testing.T) {
	for _, ok := range []string{"p-001", "user_7", "a.b", strings.Repeat("x", 64)} {
		if !shop.ValidID(ok) {
			t.Errorf("ValidID(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", "a b", "a/b", "é", strings.Repeat("x", 65), "a\nb", "a%20b"} {
		if shop.ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

func TestIdentify(t *testing.T) {
	id := shop.Identity{}
	h := shop.Identify("pricing", &id)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	got := rec.Header().Get(shop.HeaderInstance)
	if !strings.HasPrefix(got, "pricing-") || id.ID != got {
		t.Errorf("default identity %q (config now %q), want pricing-<pid> in both", got, id.ID)
	}
}

func TestServedBy(t *testing.T) {
	if got := shop.ServedBy("gateway-1", "", "catalog-2"); got != "gateway-1 catalog-2" {
		t.Errorf("ServedBy = %q", got)
	}
}

func ExampleIdentify() {
	id := shop.Identity{ID: "catalog-3"}
	h := shop.Identify("catalog", &id)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/products", nil))
	fmt.Println(rec.Header().Get(shop.HeaderInstance))
	// Output: catalog-3
}
