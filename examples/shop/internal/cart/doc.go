// Package cart is the shop's cart service: carts live in the memory of one instance.
//
// Start with Setup and Options, which cmd main passes to chassis.Main:
//
//	var cfg cart.Config
//	chassis.Main("cart", cart.Setup(&cfg), cart.Options(&cfg)...)
//
// Routes: GET /carts/{user}, POST /carts/{user}/items (JSON shop.Item; adds to the quantity of a
// product already in the cart) and DELETE /carts/{user}.
//
// There is no shared store on purpose: callers route each user to one instance with a ring hash on
// the user id (the gateway does, with lb.RingHash), so a user's cart stays on one instance while the
// set of instances is stable, and moves — empty — when it changes. The demo shows exactly that. The
// number of carts is bounded (CART_MAX_CARTS): the least recently used cart goes first.
package cart
