package gateway

import (
	"errors"
	"net/http"
	"time"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/examples/shop/internal/pricing/pricingpb"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
)

// Name is the service name the gateway registers under.
const Name = "gateway"

// Dependencies the gateway calls, by service name.
const (
	CatalogService = "catalog"
	PricingService = "pricing"
	CartService    = "cart"
)

// Config is the gateway's own environment. Authentication (AUTH_*) and rate limiting
// (RATE_LIMIT_*) are chassis settings: chassis wires them in front of every route.
type Config struct {
	shop.Identity
	CatalogTimeout  time.Duration `envconfig:"GATEWAY_CATALOG_TIMEOUT" default:"1s" validate:"gt=0" desc:"deadline of a call to catalog"`
	PricingTimeout  time.Duration `envconfig:"GATEWAY_PRICING_TIMEOUT" default:"300ms" validate:"gt=0" desc:"deadline of a call to pricing; beyond it products are answered without a price (see GATEWAY_PRICING_FALLBACK)"`
	CartTimeout     time.Duration `envconfig:"GATEWAY_CART_TIMEOUT" default:"1s" validate:"gt=0" desc:"deadline of a call to cart"`
	PricingFallback bool          `envconfig:"GATEWAY_PRICING_FALLBACK" default:"true" desc:"answer products without a price when pricing fails, instead of 502/504"`
	PricingProtocol string        `envconfig:"GATEWAY_PRICING_PROTOCOL" default:"grpc" validate:"oneof=grpc http" desc:"how the gateway calls pricing: grpc (its gRPC API, through svc.GRPCClient) or http (its HTTP routes, through svc.Client)"`
}

// Gateway is the gateway service's state. Its handlers are safe for concurrent use.
type Gateway struct {
	// Config is loaded from the environment by chassis (Options passes it to chassis.WithConfig).
	Config Config

	catalog, cart *http.Client
	pricing       pricer
	authenticated bool // chassis verifies bearer tokens: carts belong to their subject
}

// New returns a gateway whose Config chassis fills in.
func New() *Gateway { return &Gateway{} }

// Options returns the chassis options the gateway needs: its config and the X-Instance middleware.
func (g *Gateway) Options() []chassis.Option {
	return []chassis.Option{
		chassis.WithConfig(&g.Config),
		chassis.WithMiddleware(shop.Identify(Name, &g.Config.Identity)),
	}
}

// Setup builds the clients and registers the routes on svc.
func (g *Gateway) Setup(svc *chassis.Service) error {
	st := svc.Settings()
	g.authenticated = st.AuthEnabled()
	g.catalog = svc.Client(CatalogService)
	if g.Config.PricingProtocol == ProtocolHTTP {
		g.pricing = httpPricer{c: svc.Client(PricingService), timeout: g.Config.PricingTimeout}
	} else {
		g.pricing = grpcPricer{c: pricingpb.NewPricingClient(svc.GRPCClient(PricingService)), timeout: g.Config.PricingTimeout}
	}
	g.cart = svc.Client(CartService, chassis.WithBalancer(lb.WithPolicy(lb.RingHash)))

	svc.HandleFunc("GET /products", g.listProducts)
	svc.HandleFunc("GET /products/{id}", g.getProduct)
	svc.HandleFunc("GET /cart/{user}", g.getCart)
	svc.HandleFunc("POST /cart/{user}/items", g.addToCart)
	return nil
}

// ErrUpstream is matched by every error of a call to another service.
var ErrUpstream = errors.New("upstream call failed")
