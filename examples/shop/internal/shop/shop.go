package shop

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/cloudchassis/kit/chassis"
)

// Response headers that name instances.
const (
	// HeaderInstance names the instance that produced a response ("pricing-2").
	HeaderInstance = "X-Instance"
	// HeaderServedBy lists every instance that took part in a gateway response, the gateway's own
	// first: "gateway-1 catalog-3 pricing-2".
	HeaderServedBy = "X-Served-By"
	// HeaderDegraded names the dependencies a response was answered without ("pricing").
	HeaderDegraded = "X-Degraded"
	// MetaInstance is HeaderInstance's gRPC counterpart: the response header metadata that names the
	// instance that answered a call.
	MetaInstance = "x-instance"
)

// Identity is the instance identity every shop service reads from its environment.
type Identity struct {
	ID string `envconfig:"INSTANCE_ID" desc:"name of this instance in the X-Instance response header; default <service>-<pid>"`
}

// Identify returns middleware that sets X-Instance on every response. It reads id when a route is
// registered (after the environment was loaded), so it can be given to chassis.Main before the
// configuration exists; an empty ID becomes "<service>-<pid>".
func Identify(service string, id *Identity) chassis.Middleware {
	return func(next http.Handler) http.Handler {
		name := id.ID
		if name == "" {
			name = fmt.Sprintf("%s-%d", service, os.Getpid())
			id.ID = name
		}
		value := []string{name}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header()[HeaderInstance] = value
			next.ServeHTTP(w, r)
		})
	}
}

// Product is a catalog entry.
type Product struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Category    string `json:"category"`
}

// Price is what pricing answers for a product.
type Price struct {
	ProductID string `json:"product_id"`
	Cents     int64  `json:"cents"`
	Currency  string `json:"currency"`
}

// PricedProduct is a product with its price, as the gateway serves it. Price is nil when pricing
// did not answer in time; then PriceUnavailable is true and the response carries X-Degraded.
type PricedProduct struct {
	Product
	Price            *Price `json:"price,omitempty"`
	PriceUnavailable bool   `json:"price_unavailable,omitempty"`
}

// Item is one line of a cart.
type Item struct {
	ProductID string `json:"product_id" validate:"required,max=64"`
	Quantity  int    `json:"quantity" validate:"required,min=1,max=100"`
}

// Cart is a user's cart.
type Cart struct {
	User  string `json:"user"`
	Items []Item `json:"items"`
	// Instance is the cart instance that holds the cart: the ring hash keeps it stable while the set
	// of instances is.
	Instance string `json:"instance,omitempty"`
}

// WriteJSON writes v as a JSON response with status. Encoding errors are lost with the connection,
// as the status is already sent.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// ValidID reports whether s is usable as a product or user id: 1 to 64 characters from
// [A-Za-z0-9_.-]. Ids travel in URLs and hash keys, so the shop accepts nothing else.
func ValidID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// ServedBy joins instance names for HeaderServedBy, skipping empty ones.
func ServedBy(names ...string) string {
	return strings.Join(slices.DeleteFunc(names, func(s string) bool { return s == "" }), " ")
}
