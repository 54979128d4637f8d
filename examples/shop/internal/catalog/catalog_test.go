package catalog_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/chassistest"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/examples/shop/internal/catalog"
	"github.com/cloudchassis/kit/examples/shop/internal/pricing"
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

// reindexer builds a catalog service that finds pricing at addr, as `catalog reindex` does, without
// starting it.
func reindexer(t *testing.T, addr string) *chassis.Service {
	t.Helper()
	var cfg catalog.Config
	opts := append(catalog.Options(&cfg), chassis.WithoutSignals(), chassis.WithEnv(config.MapLookup(map[string]string{
		"INSTANCE_ID": "catalog-1", "DISCOVERY": "static", "DISCOVERY_STATIC_PRICING": addr,
		"OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "error", "SHUTDOWN_TIMEOUT": "5s", "DRAIN_DELAY": "0s",
	})))
	svc, err := chassis.New(catalog.Name, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := catalog.Setup(&cfg)(svc); err != nil {
		t.Fatal(err)
	}
	return svc
}

// The reindex task asks the real pricing service, through the catalog's client, and writes every
// requested category sorted by price.
func TestReindexTask(t *testing.T) {
	var pcfg pricing.Config
	pr := chassistest.Start(t, pricing.Name, pricing.Setup(&pcfg), chassistest.WithChassisOptions(pricing.Options(&pcfg)...))

	svc := reindexer(t, pr.Addr())
	if tasks := svc.Tasks(); len(tasks) != 1 || tasks[0].Name != "reindex" {
		t.Fatalf("tasks %v, want reindex", tasks)
	}
	out := filepath.Join(t.TempDir(), "index.json")
	if err := svc.RunTask(context.Background(), "reindex", []string{"-out", out, "toys", "office"}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var index map[string][]catalog.IndexEntry
	if err := json.Unmarshal(raw, &index); err != nil {
		t.Fatal(err)
	}
	if len(index) != 2 || len(index["toys"]) != 4 || len(index["office"]) != 4 {
		t.Fatalf("index %s, want toys and office with 4 products each", raw)
	}
	for cat, entries := range index {
		for i, e := range entries {
			want := pricing.PriceOf(e.ID, pcfg.Currency)
			if e.Cents != want.Cents || e.Currency != want.Currency || e.Name == "" {
				t.Errorf("%s: %+v, want pricing's %+v", cat, e, want)
			}
			if i > 0 && entries[i-1].Cents > e.Cents {
				t.Errorf("%s not sorted by price: %+v before %+v", cat, entries[i-1], e)
			}
		}
	}

	// A category that does not exist is a usage error: exit code 2.
	svc = reindexer(t, pr.Addr())
	err = svc.RunTask(context.Background(), "reindex", []string{"garden"})
	var coded interface{ ExitCode() int }
	if !errors.As(err, &coded) || coded.ExitCode() != chassis.ExitConfig {
		t.Errorf("unknown category: %v, want an error with exit code 2", err)
	}
}
