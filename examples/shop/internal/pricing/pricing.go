package pricing

import (
	"crypto/subtle"
	"hash/fnv"
	"net/http"
	"strings"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/examples/shop/internal/pricing/pricingpb"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
	"github.com/cloudchassis/kit/httpx"
	"github.com/cloudchassis/kit/problem"
)

// Name is the service name pricing registers under.
const Name = "pricing"

// MaxBatch is the most ids GET /prices accepts at once.
const MaxBatch = 100

// Config is pricing's own environment.
type Config struct {
	shop.Identity
	Currency     string `envconfig:"PRICING_CURRENCY" default:"EUR" validate:"len=3" desc:"ISO 4217 currency of every price"`
	ChaosEnabled bool   `envconfig:"CHAOS_ENABLED" default:"false" desc:"serve /chaos to inject latency, errors and 503 storms (demo only)"`
	ChaosToken   string `envconfig:"CHAOS_TOKEN" secret:"true" desc:"when set, /chaos requires Authorization: Bearer <token>"`
}

// Options returns the chassis options pricing needs: its config and the X-Instance middleware.
func Options(cfg *Config) []chassis.Option {
	return []chassis.Option{chassis.WithConfig(cfg), chassis.WithMiddleware(shop.Identify(Name, &cfg.Identity))}
}

// Setup registers pricing's routes on svc.
func Setup(cfg *Config) func(*chassis.Service) error {
	return func(svc *chassis.Service) error {
		chaos := NewChaos()
		inject := func(h http.HandlerFunc) http.Handler {
			if !cfg.ChaosEnabled {
				return h
			}
			return chaos.Middleware(h)
		}
		svc.Handle("GET /prices/{id}", inject(func(w http.ResponseWriter, r *http.Request) {
			id := r.PathValue("id")
			if !shop.ValidID(id) {
				problem.Write(w, http.StatusBadRequest, "", "product ids are 1-64 characters of [A-Za-z0-9_.-]")
				return
			}
			httpx.WriteJSON(w, r, http.StatusOK, PriceOf(id, cfg.Currency), nil)
		}))
		svc.Handle("GET /prices", inject(func(w http.ResponseWriter, r *http.Request) {
			ids := strings.Split(r.URL.Query().Get("ids"), ",")
			if len(ids) > MaxBatch {
				problem.Write(w, http.StatusBadRequest, "", "at most 100 ids per request")
				return
			}
			out := make([]shop.Price, 0, len(ids))
			for _, id := range ids {
				if !shop.ValidID(id) {
					problem.Write(w, http.StatusBadRequest, "", "ids=a,b,c with ids of 1-64 characters of [A-Za-z0-9_.-]")
					return
				}
				out = append(out, PriceOf(id, cfg.Currency))
			}
			httpx.WriteJSON(w, r, http.StatusOK, out, nil)
		}))
		// The same prices over gRPC (pricingpb.Pricing), which the gateway calls by default; the
		// faults of /chaos apply to both.
		var grpcChaos *Chaos
		if cfg.ChaosEnabled {
			grpcChaos = chaos
		}
		pricingpb.RegisterPricingServer(svc.GRPC(), NewGRPCServer(cfg.Currency, grpcChaos, &cfg.Identity))
		if cfg.ChaosEnabled {
			guard := tokenGuard(cfg.ChaosToken)
			svc.Handle("GET /chaos", guard(http.HandlerFunc(chaos.get)))
			svc.Handle("PUT /chaos", guard(http.HandlerFunc(chaos.put)))
			svc.Handle("DELETE /chaos", guard(http.HandlerFunc(chaos.clear)))
			svc.Logger().Warn("chaos knobs enabled on /chaos: this instance can be told to fail")
		}
		return nil
	}
}

// PriceOf returns the price of a product: between 1.00 and 500.99, derived from the id alone.
func PriceOf(id, currency string) shop.Price {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return shop.Price{ProductID: id, Cents: 100 + int64(h.Sum64()%50000), Currency: currency}
}

func tokenGuard(token string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if token == "" {
			return next
		}
		want := []byte("Bearer " + token)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="chaos"`)
				problem.Write(w, http.StatusUnauthorized, "", "the chaos knobs need Authorization: Bearer <CHAOS_TOKEN>")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
