package cart

import (
	"container/list"
	"net/http"
	"sync"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
	"github.com/cloudchassis/kit/httpx"
	"github.com/cloudchassis/kit/problem"
)

// Name is the service name cart registers under.
const Name = "cart"

// Config is the cart service's own environment.
type Config struct {
	shop.Identity
	MaxCarts int `envconfig:"CART_MAX_CARTS" default:"100000" validate:"min=1" desc:"carts kept in memory; the least recently used is dropped beyond"`
	MaxItems int `envconfig:"CART_MAX_ITEMS" default:"50" validate:"min=1" desc:"distinct products per cart (more answers 409)"`
}

// Options returns the chassis options cart needs: its config and the X-Instance middleware.
func Options(cfg *Config) []chassis.Option {
	return []chassis.Option{chassis.WithConfig(cfg), chassis.WithMiddleware(shop.Identify(Name, &cfg.Identity))}
}

// Setup registers the cart routes on svc.
func Setup(cfg *Config) func(*chassis.Service) error {
	return func(svc *chassis.Service) error {
		s := NewStore(cfg.MaxCarts, cfg.MaxItems)
		user := func(w http.ResponseWriter, r *http.Request) (string, bool) {
			u := r.PathValue("user")
			if !shop.ValidID(u) {
				problem.Write(w, http.StatusBadRequest, "", "user ids are 1-64 characters of [A-Za-z0-9_.-]")
				return "", false
			}
			return u, true
		}
		reply := func(w http.ResponseWriter, status int, u string, items []shop.Item) {
			shop.WriteJSON(w, status, shop.Cart{User: u, Items: items, Instance: cfg.ID})
		}
		svc.HandleFunc("GET /carts/{user}", func(w http.ResponseWriter, r *http.Request) {
			if u, ok := user(w, r); ok {
				reply(w, http.StatusOK, u, s.Get(u))
			}
		})
		svc.HandleFunc("POST /carts/{user}/items", func(w http.ResponseWriter, r *http.Request) {
			u, ok := user(w, r)
			if !ok {
				return
			}
			var it shop.Item
			if !httpx.Bind(w, r, &it) {
				return
			}
			if !shop.ValidID(it.ProductID) {
				problem.Write(w, http.StatusUnprocessableEntity, "", "product_id: 1-64 characters of [A-Za-z0-9_.-]")
				return
			}
			items, ok := s.Add(u, it)
			if !ok {
				problem.Write(w, http.StatusConflict, "", "the cart is full")
				return
			}
			reply(w, http.StatusOK, u, items)
		})
		svc.HandleFunc("DELETE /carts/{user}", func(w http.ResponseWriter, r *http.Request) {
			if u, ok := user(w, r); ok {
				s.Delete(u)
				w.WriteHeader(http.StatusNoContent)
			}
		})
		return nil
	}
}

// Store is a bounded in-memory map of carts with least-recently-used eviction. It is safe for
// concurrent use.
type Store struct {
	maxCarts, maxItems int

	mu    sync.Mutex
	carts map[string]*list.Element // of *entry
	lru   list.List                // front: most recently used
}

type entry struct {
	user  string
	items []shop.Item
}

// NewStore returns an empty Store for at most maxCarts carts of at most maxItems distinct products.
func NewStore(maxCarts, maxItems int) *Store {
	return &Store{maxCarts: max(1, maxCarts), maxItems: max(1, maxItems), carts: map[string]*list.Element{}}
}

// Get returns a copy of the user's items (nil for no cart).
func (s *Store) Get(user string) []shop.Item {
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.carts[user]
	if !ok {
		return nil
	}
	s.lru.MoveToFront(el)
	return append([]shop.Item(nil), el.Value.(*entry).items...)
}

// Add adds it to the user's cart and returns a copy of the items; false if the cart already holds
// maxItems other products.
func (s *Store) Add(user string, it shop.Item) ([]shop.Item, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.carts[user]
	if !ok {
		if len(s.carts) >= s.maxCarts {
			oldest := s.lru.Back()
			s.lru.Remove(oldest)
			delete(s.carts, oldest.Value.(*entry).user)
		}
		el = s.lru.PushFront(&entry{user: user})
		s.carts[user] = el
	}
	s.lru.MoveToFront(el)
	e := el.Value.(*entry)
	found := false
	for i := range e.items {
		if e.items[i].ProductID == it.ProductID {
			e.items[i].Quantity += it.Quantity
			found = true
			break
		}
	}
	if !found {
		if len(e.items) >= s.maxItems {
			return append([]shop.Item(nil), e.items...), false
		}
		e.items = append(e.items, it)
	}
	return append([]shop.Item(nil), e.items...), true
}

// Delete removes the user's cart.
func (s *Store) Delete(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.carts[user]; ok {
		s.lru.Remove(el)
		delete(s.carts, user)
	}
}

// Len returns the number of carts held.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.carts)
}
