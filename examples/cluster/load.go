package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/resilience"
)

// Load generator operations, as the summary names them.
const (
	opProduct  = "GET /products/{id}"
	opProducts = "GET /products"
	opCartGet  = "GET /cart/{user}"
	opCartAdd  = "POST /cart/{user}/items"
)

// Headers the shop services set (examples/shop/internal/shop, which is internal to the shop).
const (
	headerServedBy = "X-Served-By"
	headerDegraded = "X-Degraded"
	headerInstance = "X-Instance"
)

// maxInflight bounds the load generator's concurrent requests: an open-loop generator keeps sending
// when the cluster slows down (that is the point), but not without limit.
const maxInflight = 2000

// edge is the load generator's client: it finds the gateways in the registry, like any service
// does, and calls them with the same balancer and resilience policies a chassis client has. It
// plays the customer's side of a load balancer in front of the gateways.
type edge struct {
	release func() // the registry watch
	bal     *lb.Balancer
	client  *http.Client
}

type attemptsKey struct{}

// countAttempts counts the attempts of a request (retries and hedges) in its context's counter.
type countAttempts struct{ next http.RoundTripper }

func (c countAttempts) RoundTrip(req *http.Request) (*http.Response, error) {
	if n, ok := req.Context().Value(attemptsKey{}).(*atomic.Int32); ok {
		n.Add(1)
	}
	return c.next.RoundTrip(req)
}

type pickedKey struct{}

// pickedInstance records in the request's context the gateway instance the balancer sent its last
// attempt to, so that a failure without an X-Instance header (a load shedder's 503, a reset) still
// names it.
type pickedInstance struct {
	name string
	next http.RoundTripper
}

func (p pickedInstance) RoundTrip(req *http.Request) (*http.Response, error) {
	if v, ok := req.Context().Value(pickedKey{}).(*atomic.Value); ok {
		v.Store(p.name)
	}
	return p.next.RoundTrip(req)
}

// instanceName is the shop's name of an instance ("gateway-2", from its registration's metadata),
// or its registry id.
func instanceName(inst discovery.Instance) string {
	if n := inst.Meta["instance_id"]; n != "" {
		return n
	}
	return inst.ID
}

func newEdge(reg registry) (*edge, error) {
	w, release, err := reg.Watch("gateway")
	if err != nil {
		return nil, err
	}
	cfg := resilience.DefaultConfig()
	cfg.Timeout = 5 * time.Second
	cfg.AttemptTimeout = 2 * time.Second
	cfg.Retries = 3
	dep, err := resilience.NewDependency("gateway", cfg)
	if err != nil {
		release()
		return nil, err
	}
	base := &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second}
	bal, err := lb.New("gateway", w,
		lb.WithBaseTransport(countAttempts{base}),
		lb.WithClassifier(dep.Classify),
		lb.WithInstanceTransport(func(inst discovery.Instance, next http.RoundTripper) http.RoundTripper {
			return dep.Instance(inst.ID, pickedInstance{name: instanceName(inst), next: next})
		}))
	if err != nil {
		release()
		return nil, err
	}
	if err := bal.Start(); err != nil {
		release()
		return nil, err
	}
	return &edge{release: release, bal: bal, client: &http.Client{Transport: dep.Wrap(lb.NewTransport(bal))}}, nil
}

func (e *edge) Close() error {
	err := e.bal.Close()
	e.release()
	e.client.CloseIdleConnections()
	return err
}

// loadGen sends an open-loop mix of shop requests at a rate: the next request leaves on schedule
// whether or not earlier ones have answered, as real customers do (a closed loop would slow down
// with the cluster and hide its latency).
type loadGen struct {
	client *http.Client
	stats  *stats
	tokens map[string]string // user -> bearer token; nil without authentication
	users  []string
	ids    []string
	rng    *rand.Rand // used by the run goroutine only

	rate     atomic.Uint64 // float64 bits, requests per second
	inflight atomic.Int64
	dropped  atomic.Int64
	wg       sync.WaitGroup
}

func newLoadGen(client *http.Client, st *stats, rate float64, users int, ids []string, iss *issuer, seed uint64) (*loadGen, error) {
	g := &loadGen{client: client, stats: st, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	g.setRate(rate)
	for i := range users {
		g.users = append(g.users, fmt.Sprintf("user-%03d", i+1))
	}
	g.ids = ids
	if iss != nil {
		g.tokens = map[string]string{}
		for _, u := range g.users {
			t, err := iss.token(u, 24*time.Hour)
			if err != nil {
				return nil, err
			}
			g.tokens[u] = t
		}
	}
	return g, nil
}

func (g *loadGen) setRate(r float64) { g.rate.Store(math.Float64bits(max(r, 0.1))) }
func (g *loadGen) Rate() float64     { return math.Float64frombits(g.rate.Load()) }

// run sends requests until ctx is done, then waits for the ones in flight.
func (g *loadGen) run(ctx context.Context, target string) {
	defer g.wg.Wait()
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		now := time.Now()
		// Send every request whose time has come; if the generator fell far behind (a stalled
		// machine), skip ahead rather than bursting.
		if now.Sub(next) > time.Second {
			next = now
		}
		for !next.After(now) {
			g.fire(target)
			next = next.Add(time.Duration(float64(time.Second) / g.Rate()))
		}
		timer.Reset(time.Until(next))
	}
}

// request is one planned request.
type request struct {
	op, method, path, user string
	body                   []byte
}

func (g *loadGen) plan() request {
	user := g.users[g.rng.IntN(len(g.users))]
	id := g.ids[g.rng.IntN(len(g.ids))]
	switch x := g.rng.IntN(100); {
	case x < 45:
		return request{op: opProduct, method: http.MethodGet, path: "/products/" + id}
	case x < 65:
		return request{op: opProducts, method: http.MethodGet, path: "/products"}
	case x < 85:
		return request{op: opCartGet, method: http.MethodGet, path: "/cart/" + user, user: user}
	default:
		body, _ := json.Marshal(map[string]any{"product_id": id, "quantity": 1 + g.rng.IntN(3)})
		return request{op: opCartAdd, method: http.MethodPost, path: "/cart/" + user + "/items", user: user, body: body}
	}
}

func (g *loadGen) fire(target string) {
	r := g.plan()
	if g.inflight.Load() >= maxInflight {
		g.dropped.Add(1)
		g.stats.record(outcome{at: time.Now(), op: r.op, err: "load generator saturated (too many requests in flight)",
			idempotent: r.method == http.MethodGet})
		return
	}
	g.inflight.Add(1)
	g.wg.Go(func() {
		defer g.inflight.Add(-1)
		g.stats.record(g.do(target, r))
	})
}

// do sends r with its own deadline (not the run's context: requests in flight when the run ends
// finish and count).
func (g *loadGen) do(target string, r request) outcome {
	var attempts atomic.Int32
	var picked atomic.Value
	ctx := context.WithValue(context.WithValue(context.Background(), attemptsKey{}, &attempts), pickedKey{}, &picked)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	o := outcome{op: r.op, idempotent: r.method == http.MethodGet}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, "http://"+target+r.path, body)
	if err != nil {
		o.err = err.Error()
		return o
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if t, ok := g.tokens[r.user]; ok && r.user != "" {
		req.Header.Set("Authorization", "Bearer "+t)
	}
	res, err := g.client.Do(req)
	if err == nil {
		o.status = res.StatusCode
		if res.StatusCode >= 400 {
			// An error's problem details say why (shed, rate-limited, which dependency failed).
			var p struct {
				Detail string `json:"detail"`
			}
			data, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
			if json.Unmarshal(data, &p) == nil {
				o.detail = p.Detail
			}
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<20))
		_ = res.Body.Close()
		o.instance = res.Header.Get(headerInstance)
		o.degraded = res.Header.Get(headerDegraded) != ""
		o.servedBy = strings.Fields(res.Header.Get(headerServedBy))
	} else {
		o.err = shorten(err.Error())
	}
	if name, ok := picked.Load().(string); ok && o.instance == "" {
		o.instance = name
	}
	o.at = time.Now()
	o.latency = o.at.Sub(start)
	o.attempts = int(attempts.Load())
	return o
}

// productIDs asks the shop for its product ids, retrying until ctx is done: the first gateway may
// still be finding the catalog.
func productIDs(ctx context.Context, client *http.Client, target string) ([]string, error) {
	for {
		ids, err := fetchIDs(ctx, client, target)
		if err == nil {
			return ids, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("product list: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func fetchIDs(ctx context.Context, client *http.Client, target string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+target+"/products", nil)
	if err != nil {
		return nil, err
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /products: %s", res.Status)
	}
	var products []struct {
		ID string `json:"id"`
	}
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&products); err != nil {
		return nil, fmt.Errorf("GET /products: %w", err)
	}
	if len(products) == 0 {
		return nil, fmt.Errorf("GET /products: empty catalog")
	}
	ids := make([]string, len(products))
	for i, p := range products {
		ids[i] = p.ID
	}
	return ids, nil
}

func shorten(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

func itoa(i int) string { return strconv.Itoa(i) }
