package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
	"github.com/cloudchassis/kit/guard"
	"github.com/cloudchassis/kit/lifecycle"
)

// Name is the service name the gateway registers under.
const Name = "gateway"

// Dependencies the gateway calls, by service name.
const (
	CatalogService = "catalog"
	PricingService = "pricing"
	CartService    = "cart"
)

// Config is the gateway's own environment.
type Config struct {
	shop.Identity
	CatalogTimeout  time.Duration `envconfig:"GATEWAY_CATALOG_TIMEOUT" default:"1s" validate:"gt=0" desc:"deadline of a call to catalog"`
	PricingTimeout  time.Duration `envconfig:"GATEWAY_PRICING_TIMEOUT" default:"300ms" validate:"gt=0" desc:"deadline of a call to pricing; beyond it products are answered without a price (see GATEWAY_PRICING_FALLBACK)"`
	CartTimeout     time.Duration `envconfig:"GATEWAY_CART_TIMEOUT" default:"1s" validate:"gt=0" desc:"deadline of a call to cart"`
	PricingFallback bool          `envconfig:"GATEWAY_PRICING_FALLBACK" default:"true" desc:"answer products without a price when pricing fails, instead of 502/504"`

	auth.Config
	guard.RateLimitConfig
}

// Gateway is the gateway service's state. Its handlers are safe for concurrent use.
type Gateway struct {
	// Config is loaded from the environment by chassis (Options passes it to chassis.WithConfig).
	Config Config

	catalog, pricing, cart *http.Client

	// Built in Setup, read by the middleware when the routes are registered.
	verifier *auth.Verifier
	limiter  *guard.Limiter
}

// New returns a gateway whose Config chassis fills in.
func New() *Gateway { return &Gateway{} }

// Options returns the chassis options the gateway needs: its config and its middleware —
// X-Instance, then authentication, then rate limiting keyed by the authenticated subject (after
// authentication, so that a forged token cannot drain someone else's bucket; see docs/protection.md).
//
// The middleware is built when the routes are registered, in Setup, after the environment is
// loaded; with authentication and rate limiting off it adds nothing to the request path.
func (g *Gateway) Options() []chassis.Option {
	return []chassis.Option{
		chassis.WithConfig(&g.Config),
		chassis.WithMiddleware(shop.Identify(Name, &g.Config.Identity), g.authenticate, g.rateLimit),
	}
}

func (g *Gateway) authenticate(next http.Handler) http.Handler {
	if g.verifier == nil {
		return next
	}
	return g.verifier.Middleware(next)
}

func (g *Gateway) rateLimit(next http.Handler) http.Handler {
	return g.limiter.Middleware(next) // nil-safe: no limiter, no wrapper
}

// Setup builds the clients and the protection, and registers the routes on svc.
func (g *Gateway) Setup(svc *chassis.Service) error {
	cfg := &g.Config
	verifier, jwks, err := cfg.Config.New()
	if err != nil {
		return fmt.Errorf("authentication: %w", err)
	}
	g.verifier = verifier
	if jwks != nil {
		svc.Hook(jwksHook(jwks))
	}
	mp := svc.Telemetry().MeterProvider()
	g.limiter = cfg.RateLimitConfig.NewLimiter(auth.Subject, guard.WithMeterProvider(mp), guard.WithLogger(svc.Slog()))

	g.catalog = svc.Client(CatalogService)
	g.pricing = svc.Client(PricingService)
	g.cart = svc.Client(CartService, chassis.WithBalancer(lb.WithPolicy(lb.RingHash)))

	svc.HandleFunc("GET /products", g.listProducts)
	svc.HandleFunc("GET /products/{id}", g.getProduct)
	svc.HandleFunc("GET /cart/{user}", g.getCart)
	svc.HandleFunc("POST /cart/{user}/items", g.addToCart)
	return nil
}

// jwksHook refreshes the key set in the background while the service runs.
func jwksHook(jwks *auth.JWKS) lifecycle.Hook {
	var (
		cancel context.CancelFunc
		wg     sync.WaitGroup
	)
	return lifecycle.Hook{
		Name: "jwks refresh",
		Start: func(ctx context.Context) error {
			// A first fetch bounded by the start deadline: a service that cannot verify any token is
			// not ready. Run keeps refreshing on its own context, which Stop cancels.
			if err := jwks.Refresh(ctx); err != nil {
				return fmt.Errorf("jwks: %w", err)
			}
			var runCtx context.Context
			runCtx, cancel = context.WithCancel(context.Background())
			wg.Go(func() { _ = jwks.Run(runCtx) })
			return nil
		},
		Stop: func(context.Context) error {
			cancel()
			wg.Wait()
			return nil
		},
	}
}

// ErrUpstream is matched by every error of a call to another service.
var ErrUpstream = errors.New("upstream call failed")
