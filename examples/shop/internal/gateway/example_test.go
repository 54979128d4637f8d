package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/examples/shop/internal/gateway"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
)

// A gateway whose dependencies are fixed addresses (static discovery), served in memory. Here pricing
// is an httptest server that fails, so the product comes back without its price.
func Example() {
	catalog := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		shop.WriteJSON(w, http.StatusOK, shop.Product{ID: "p-001", Name: "Espresso machine"})
	}))
	defer catalog.Close()
	pricing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer pricing.Close()

	g := gateway.New()
	env := map[string]string{
		"INSTANCE_ID": "gateway-1", "OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "error", "DRAIN_DELAY": "0s",
		"HOST": "127.0.0.1", "PORT": "0", "ADMIN_PORT": "0",
		"DISCOVERY_STATIC_CATALOG": catalog.Listener.Addr().String(),
		"DISCOVERY_STATIC_PRICING": pricing.Listener.Addr().String(),
		"DISCOVERY_STATIC_CART":    "127.0.0.1:1",
	}
	svc, err := chassis.New(gateway.Name, append(g.Options(), chassis.WithEnv(config.MapLookup(env)), chassis.WithoutSignals())...)
	if err != nil {
		panic(err)
	}
	if err := g.Setup(svc); err != nil {
		panic(err)
	}
	// Run starts the clients' balancers; the example serves in memory once the service is ready.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	<-svc.Ready()
	defer func() { cancel(); <-done }()

	rec := httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/products/p-001", nil))
	var p shop.PricedProduct
	_ = json.Unmarshal(rec.Body.Bytes(), &p)
	fmt.Println(rec.Code, p.Name, p.PriceUnavailable, rec.Header().Get(shop.HeaderDegraded))
	// Output: 200 Espresso machine true pricing
}
