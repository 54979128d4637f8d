package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
	"github.com/cloudchassis/kit/httpx"
	"github.com/cloudchassis/kit/problem"
	"github.com/cloudchassis/kit/telemetry"
)

// maxUpstreamBody bounds what the gateway reads from another service.
const maxUpstreamBody = 1 << 20

// UpstreamError is the failure of a call to another service.
type UpstreamError struct {
	Service string
	// Status is the upstream's HTTP status, or 0 when no response arrived.
	Status int
	// Detail is the upstream problem's detail, when it sent one.
	Detail string
	Err    error
}

func (e *UpstreamError) Error() string {
	switch {
	case e.Status != 0 && e.Detail != "":
		return fmt.Sprintf("%s answered %d: %s", e.Service, e.Status, e.Detail)
	case e.Status != 0:
		return fmt.Sprintf("%s answered %d", e.Service, e.Status)
	default:
		return fmt.Sprintf("%s: %v", e.Service, e.Err)
	}
}

func (e *UpstreamError) Unwrap() error { return e.Err }

// Is makes every UpstreamError match ErrUpstream.
func (e *UpstreamError) Is(target error) bool { return target == ErrUpstream }

// Timeout reports whether the call ran out of time.
func (e *UpstreamError) Timeout() bool {
	return e.Status == 0 && (errors.Is(e.Err, context.DeadlineExceeded) || isTimeout(e.Err))
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// call sends one request to service and decodes a 2xx JSON answer into out. It returns the instance
// that answered (X-Instance), also on failure when a response arrived.
func call(ctx context.Context, c *http.Client, service, method, path, template string, timeout time.Duration, body []byte, out any) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ctx = telemetry.WithURLTemplate(ctx, template)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+service+path, rd)
	if err != nil {
		return "", &UpstreamError{Service: service, Err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.Do(req)
	if err != nil {
		return "", &UpstreamError{Service: service, Err: err}
	}
	defer res.Body.Close()
	instance := res.Header.Get(shop.HeaderInstance)
	data, err := io.ReadAll(io.LimitReader(res.Body, maxUpstreamBody))
	if err != nil {
		return instance, &UpstreamError{Service: service, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	if res.StatusCode/100 != 2 {
		var p struct {
			Detail string `json:"detail"`
		}
		_ = json.Unmarshal(data, &p)
		return instance, &UpstreamError{Service: service, Status: res.StatusCode, Detail: p.Detail}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return instance, &UpstreamError{Service: service, Status: res.StatusCode, Err: fmt.Errorf("decoding the answer: %w", err)}
		}
	}
	return instance, nil
}

// fail answers for an upstream failure: its 404/400/409/422 pass through, a timeout is 504, anything
// else 502.
func fail(w http.ResponseWriter, err error) {
	var ue *UpstreamError
	if !errors.As(err, &ue) {
		problem.Write(w, http.StatusBadGateway, "", err.Error())
		return
	}
	switch {
	case ue.Status == http.StatusNotFound || ue.Status == http.StatusBadRequest ||
		ue.Status == http.StatusConflict || ue.Status == http.StatusUnprocessableEntity:
		problem.Write(w, ue.Status, "", ue.Detail)
	case ue.Timeout():
		problem.Write(w, http.StatusGatewayTimeout, "", ue.Service+" did not answer in time")
	default:
		problem.Write(w, http.StatusBadGateway, "", ue.Error())
	}
}

// servedBy collects the instances that took part in a response.
type servedBy struct {
	mu    sync.Mutex
	names []string
}

func (s *servedBy) add(name string) {
	if name == "" {
		return
	}
	s.mu.Lock()
	s.names = append(s.names, name)
	s.mu.Unlock()
}

func (g *Gateway) header(w http.ResponseWriter, sb *servedBy) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	w.Header().Set(shop.HeaderServedBy, shop.ServedBy(append([]string{g.Config.ID}, sb.names...)...))
}

func (g *Gateway) listProducts(w http.ResponseWriter, r *http.Request) {
	var sb servedBy
	var products []shop.Product
	inst, err := call(r.Context(), g.catalog, CatalogService, http.MethodGet, "/products", "/products", g.Config.CatalogTimeout, nil, &products)
	sb.add(inst)
	if err != nil {
		g.respondErr(w, &sb, err)
		return
	}
	ids := make([]string, len(products))
	for i, p := range products {
		ids[i] = p.ID
	}
	var prices []shop.Price
	if len(ids) > 0 {
		prices, inst, err = g.pricing.prices(r.Context(), ids)
		sb.add(inst)
		if err != nil && !g.Config.PricingFallback {
			g.respondErr(w, &sb, err)
			return
		}
	}
	byID := make(map[string]*shop.Price, len(prices))
	for i := range prices {
		byID[prices[i].ProductID] = &prices[i]
	}
	out := make([]shop.PricedProduct, len(products))
	degraded := false
	for i, p := range products {
		out[i] = shop.PricedProduct{Product: p, Price: byID[p.ID]}
		if out[i].Price == nil {
			out[i].PriceUnavailable = true
			degraded = true
		}
	}
	if degraded {
		w.Header().Set(shop.HeaderDegraded, PricingService)
	}
	g.respond(w, &sb, http.StatusOK, out)
}

func (g *Gateway) getProduct(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !shop.ValidID(id) {
		problem.Write(w, http.StatusBadRequest, "", "product ids are 1-64 characters of [A-Za-z0-9_.-]")
		return
	}
	var (
		sb       servedBy
		product  shop.Product
		price    shop.Price
		priceErr error
		wg       sync.WaitGroup
	)
	// Both calls at once: the answer takes the slower of the two, not their sum.
	wg.Go(func() {
		p, inst, err := g.pricing.price(r.Context(), id)
		price = p
		sb.add(inst)
		priceErr = err
	})
	inst, err := call(r.Context(), g.catalog, CatalogService, http.MethodGet, "/products/"+id, "/products/{id}", g.Config.CatalogTimeout, nil, &product)
	sb.add(inst)
	wg.Wait()
	if err != nil {
		g.respondErr(w, &sb, err)
		return
	}
	out := shop.PricedProduct{Product: product}
	switch {
	case priceErr == nil:
		out.Price = &price
	case g.Config.PricingFallback:
		out.PriceUnavailable = true
		w.Header().Set(shop.HeaderDegraded, PricingService)
	default:
		g.respondErr(w, &sb, priceErr)
		return
	}
	g.respond(w, &sb, http.StatusOK, out)
}

// cartUser returns the path's user after checking it, and, with authentication on, that the caller
// is that user.
func (g *Gateway) cartUser(w http.ResponseWriter, r *http.Request) (string, bool) {
	user := r.PathValue("user")
	if !shop.ValidID(user) {
		problem.Write(w, http.StatusBadRequest, "", "user ids are 1-64 characters of [A-Za-z0-9_.-]")
		return "", false
	}
	if g.authenticated {
		sub := auth.Subject(r.Context())
		if sub == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="shop"`)
			problem.Write(w, http.StatusUnauthorized, "", "a cart needs a bearer token")
			return "", false
		}
		if sub != user {
			problem.Write(w, http.StatusForbidden, "", "this cart belongs to another user")
			return "", false
		}
	}
	return user, true
}

func (g *Gateway) getCart(w http.ResponseWriter, r *http.Request) {
	user, ok := g.cartUser(w, r)
	if !ok {
		return
	}
	var sb servedBy
	var c shop.Cart
	inst, err := call(lb.WithHashKey(r.Context(), user), g.cart, CartService, http.MethodGet, "/carts/"+user, "/carts/{user}", g.Config.CartTimeout, nil, &c)
	sb.add(inst)
	if err != nil {
		g.respondErr(w, &sb, err)
		return
	}
	g.respond(w, &sb, http.StatusOK, c)
}

func (g *Gateway) addToCart(w http.ResponseWriter, r *http.Request) {
	user, ok := g.cartUser(w, r)
	if !ok {
		return
	}
	var it shop.Item
	if !httpx.Bind(w, r, &it) {
		return
	}
	body, err := json.Marshal(it)
	if err != nil {
		problem.Write(w, http.StatusInternalServerError, "", "encoding the item")
		return
	}
	var sb servedBy
	var c shop.Cart
	inst, err := call(lb.WithHashKey(r.Context(), user), g.cart, CartService, http.MethodPost, "/carts/"+user+"/items", "/carts/{user}/items", g.Config.CartTimeout, body, &c)
	sb.add(inst)
	if err != nil {
		g.respondErr(w, &sb, err)
		return
	}
	g.respond(w, &sb, http.StatusOK, c)
}

func (g *Gateway) respond(w http.ResponseWriter, sb *servedBy, status int, v any) {
	g.header(w, sb)
	shop.WriteJSON(w, status, v)
}

func (g *Gateway) respondErr(w http.ResponseWriter, sb *servedBy, err error) {
	g.header(w, sb)
	fail(w, err)
}
