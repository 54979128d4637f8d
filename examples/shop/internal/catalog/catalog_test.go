package catalog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/chassistest"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/examples/shop/internal/catalog"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, chassistest.LeakOptions()...) }

func start(t *testing.T) *chassistest.Instance {
	var cfg catalog.Config
	return chassistest.Start(t, catalog.Name, catalog.Setup(&cfg),
		chassistest.WithChassisOptions(catalog.Options(&cfg)...),
		chassistest.WithEnv(map[string]string{"INSTANCE_ID": "catalog-7"}))
}

func TestProducts(t *testing.T) {
	in := start(t)
	res, body := in.Get(t, "/products")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /products: %d %s", res.StatusCode, body)
	}
	var ps []shop.Product
	if err := json.Unmarshal([]byte(body), &ps); err != nil {
		t.Fatal(err)
	}
	if len(ps) != len(catalog.Products()) || len(ps) < 10 {
		t.Errorf("%d products, want all %d", len(ps), len(catalog.Products()))
	}
	if got := res.Header.Get(shop.HeaderInstance); got != "catalog-7" {
		t.Errorf("X-Instance %q, want catalog-7", got)
	}
	if res.Header.Get("ETag") == "" || res.Header.Get("Cache-Control") != "max-age=10" {
		t.Errorf("caching headers: ETag %q, Cache-Control %q", res.Header.Get("ETag"), res.Header.Get("Cache-Control"))
	}

	res, body = in.Get(t, "/products?category=toys")
	_ = json.Unmarshal([]byte(body), &ps)
	if res.StatusCode != http.StatusOK || len(ps) != 4 {
		t.Errorf("toys: %d, %d products, want 4", res.StatusCode, len(ps))
	}
	for _, p := range ps {
		if p.Category != "toys" {
			t.Errorf("category filter let %+v through", p)
		}
	}
}

func TestProduct(t *testing.T) {
	in := start(t)
	res, body := in.Get(t, "/products/p-003")
	var p shop.Product
	if err := json.Unmarshal([]byte(body), &p); err != nil || res.StatusCode != http.StatusOK || p.Name != "Cast-iron skillet" {
		t.Errorf("GET /products/p-003: %d %s (%v)", res.StatusCode, body, err)
	}
	req, _ := http.NewRequest(http.MethodGet, "/products/p-003", nil)
	req.Header.Set("If-None-Match", res.Header.Get("ETag"))
	if res, _ := in.Do(t, req); res.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation: %d, want 304", res.StatusCode)
	}
	res, body = in.Get(t, "/products/nope")
	if res.StatusCode != http.StatusNotFound || res.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("unknown id: %d %q %s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
}

// The catalog's handler, served in memory without starting the service.
func Example() {
	var cfg catalog.Config
	opts := append(catalog.Options(&cfg), chassis.WithEnv(config.MapLookup(map[string]string{
		"INSTANCE_ID": "catalog-1", "DISCOVERY": "none", "OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "error",
	})), chassis.WithoutSignals())
	svc, err := chassis.New(catalog.Name, opts...)
	if err != nil {
		panic(err)
	}
	defer svc.Telemetry().Shutdown(context.Background())
	if err := catalog.Setup(&cfg)(svc); err != nil {
		panic(err)
	}
	rec := httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/products/p-001", nil))
	var p shop.Product
	_ = json.Unmarshal(rec.Body.Bytes(), &p)
	fmt.Println(rec.Code, rec.Header().Get(shop.HeaderInstance), p.Name)
	// Output: 200 catalog-1 Espresso machine
}
