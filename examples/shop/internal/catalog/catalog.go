package catalog

import (
	"net/http"
	"os"
	"time"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
	"github.com/cloudchassis/kit/httpx"
	"github.com/cloudchassis/kit/problem"
)

// Name is the service name catalog registers under.
const Name = "catalog"

// Config is the catalog's own environment.
type Config struct {
	shop.Identity
	MaxAge time.Duration `envconfig:"CATALOG_MAX_AGE" default:"10s" desc:"Cache-Control max-age of catalog responses"`
}

// Options returns the chassis options the catalog needs: its config and the X-Instance middleware.
func Options(cfg *Config) []chassis.Option {
	return []chassis.Option{chassis.WithConfig(cfg), chassis.WithMiddleware(shop.Identify(Name, &cfg.Identity))}
}

// Setup registers the catalog's routes on svc.
func Setup(cfg *Config) func(*chassis.Service) error {
	return func(svc *chassis.Service) error {
		byID := make(map[string]shop.Product, len(products))
		for _, p := range products {
			byID[p.ID] = p
		}
		cc := &httpx.CacheControl{MaxAge: cfg.MaxAge}
		svc.HandleFunc("GET /products", func(w http.ResponseWriter, r *http.Request) {
			out := products
			if c := r.URL.Query().Get("category"); c != "" {
				out = make([]shop.Product, 0, len(products))
				for _, p := range products {
					if p.Category == c {
						out = append(out, p)
					}
				}
			}
			httpx.WriteJSON(w, r, http.StatusOK, out, cc)
		})
		svc.HandleFunc("GET /products/{id}", func(w http.ResponseWriter, r *http.Request) {
			p, ok := byID[r.PathValue("id")]
			if !ok {
				problem.Write(w, http.StatusNotFound, "", "no product with this id")
				return
			}
			httpx.WriteJSON(w, r, http.StatusOK, p, cc)
		})
		svc.Task("reindex", "rebuild the price index by category from pricing: reindex [-out FILE] [CATEGORY...]",
			Reindex(svc, os.Stdout))
		return nil
	}
}

// Products returns a copy of the catalog's products.
func Products() []shop.Product { return append([]shop.Product(nil), products...) }

var products = []shop.Product{
	{ID: "p-001", Name: "Espresso machine", Description: "15-bar pump, steam wand", Category: "kitchen"},
	{ID: "p-002", Name: "Burr grinder", Description: "40 grind settings", Category: "kitchen"},
	{ID: "p-003", Name: "Cast-iron skillet", Description: "26 cm, pre-seasoned", Category: "kitchen"},
	{ID: "p-004", Name: "Chef's knife", Description: "20 cm, stainless", Category: "kitchen"},
	{ID: "p-005", Name: "Trail shoes", Description: "Grippy sole, light mesh", Category: "outdoor"},
	{ID: "p-006", Name: "Rain jacket", Description: "Packable, taped seams", Category: "outdoor"},
	{ID: "p-007", Name: "Headlamp", Description: "400 lumen, USB-C", Category: "outdoor"},
	{ID: "p-008", Name: "Water filter", Description: "Squeeze type, 0.1 micron", Category: "outdoor"},
	{ID: "p-009", Name: "Mechanical keyboard", Description: "Tenkeyless, hot-swap", Category: "office"},
	{ID: "p-010", Name: "Monitor arm", Description: "Gas spring, VESA 100", Category: "office"},
	{ID: "p-011", Name: "Desk lamp", Description: "Dimmable, warm white", Category: "office"},
	{ID: "p-012", Name: "Notebook", Description: "A5, dotted, 160 pages", Category: "office"},
	{ID: "p-013", Name: "Board game", Description: "2-4 players, 45 minutes", Category: "toys"},
	{ID: "p-014", Name: "Puzzle", Description: "1000 pieces", Category: "toys"},
	{ID: "p-015", Name: "Kite", Description: "Delta, ripstop nylon", Category: "toys"},
	{ID: "p-016", Name: "Yo-yo", Description: "Ball bearing axle", Category: "toys"},
}
