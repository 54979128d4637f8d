package cart_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/chassistest"
	"github.com/cloudchassis/kit/examples/shop/internal/cart"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, chassistest.LeakOptions()...) }

func TestStore(t *testing.T) {
	s := cart.NewStore(2, 2)
	if items, ok := s.Add("ann", shop.Item{ProductID: "a", Quantity: 1}); !ok || len(items) != 1 {
		t.Fatalf("add: %v %v", items, ok)
	}
	if items, _ := s.Add("ann", shop.Item{ProductID: "a", Quantity: 2}); len(items) != 1 || items[0].Quantity != 3 {
		t.Errorf("same product twice: %+v, want one line of 3", items)
	}
	s.Add("ann", shop.Item{ProductID: "b", Quantity: 1})
	if items, ok := s.Add("ann", shop.Item{ProductID: "c", Quantity: 1}); ok || len(items) != 2 {
		t.Errorf("third product in a cart of 2: ok=%v %+v", ok, items)
	}
	// The copy returned is the caller's.
	items := s.Get("ann")
	items[0].Quantity = 99
	if s.Get("ann")[0].Quantity != 3 {
		t.Error("Get returned the store's own slice")
	}
	s.Add("bob", shop.Item{ProductID: "a", Quantity: 1})
	s.Get("ann") // ann is now the most recently used
	s.Add("cyd", shop.Item{ProductID: "a", Quantity: 1})
	if s.Len() != 2 || s.Get("bob") != nil || s.Get("ann") == nil {
		t.Errorf("LRU eviction: len %d, bob %v, ann %v; want bob evicted", s.Len(), s.Get("bob"), s.Get("ann"))
	}
	s.Delete("ann")
	if s.Get("ann") != nil || s.Len() != 1 {
		t.Error("Delete left the cart")
	}
}

func post(t *testing.T, in *chassistest.Instance, user, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "/carts/"+user+"/items", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return in.Do(t, req)
}

func TestRoutes(t *testing.T) {
	var cfg cart.Config
	in := chassistest.Start(t, cart.Name, cart.Setup(&cfg), chassistest.WithChassisOptions(cart.Options(&cfg)...),
		chassistest.WithEnv(map[string]string{"INSTANCE_ID": "cart-1", "CART_MAX_ITEMS": "2"}))

	res, body := post(t, in, "ann", `{"product_id":"p-001","quantity":2}`)
	var c shop.Cart
	if err := json.Unmarshal([]byte(body), &c); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("POST: %d %s", res.StatusCode, body)
	}
	if c.User != "ann" || c.Instance != "cart-1" || len(c.Items) != 1 || c.Items[0].Quantity != 2 {
		t.Errorf("cart %+v", c)
	}
	res, body = in.Get(t, "/carts/ann")
	_ = json.Unmarshal([]byte(body), &c)
	if res.StatusCode != http.StatusOK || len(c.Items) != 1 {
		t.Errorf("GET: %d %s", res.StatusCode, body)
	}
	for _, bad := range []string{`{"product_id":"p-001","quantity":0}`, `{"product_id":"","quantity":1}`, `{"product_id":"a b","quantity":1}`} {
		if res, body := post(t, in, "ann", bad); res.StatusCode != http.StatusUnprocessableEntity {
			t.Errorf("%s: %d %s, want 422", bad, res.StatusCode, body)
		}
	}
	if res, _ := post(t, in, "ann", `{"product_id":"p-001","quantity":1,"x":1}`); res.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown field: %d, want 400", res.StatusCode)
	}
	if res, _ := in.Get(t, "/carts/a%20b"); res.StatusCode != http.StatusBadRequest {
		t.Errorf("bad user id: %d, want 400", res.StatusCode)
	}
	post(t, in, "ann", `{"product_id":"p-002","quantity":1}`)
	if res, _ := post(t, in, "ann", `{"product_id":"p-003","quantity":1}`); res.StatusCode != http.StatusConflict {
		t.Errorf("full cart: %d, want 409", res.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodDelete, "/carts/ann", nil)
	if res, _ := in.Do(t, req); res.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE: %d", res.StatusCode)
	}
	_, body = in.Get(t, "/carts/ann")
	if c = (shop.Cart{}); json.Unmarshal([]byte(body), &c) != nil || len(c.Items) != 0 {
		t.Errorf("after DELETE: %s", body)
	}
}

func ExampleStore() {
	s := cart.NewStore(100, 10)
	s.Add("ann", shop.Item{ProductID: "p-001", Quantity: 1})
	items, _ := s.Add("ann", shop.Item{ProductID: "p-001", Quantity: 2})
	fmt.Println(items[0].ProductID, items[0].Quantity)
	// Output: p-001 3
}
