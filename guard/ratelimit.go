package guard

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/cloudchassis/kit/internal/obs"
	"github.com/cloudchassis/kit/problem"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// DefaultMaxKeys is the default bound on the number of callers a Limiter tracks per policy.
const DefaultMaxKeys = 65536

// Rate is a token bucket: PerSecond tokens are added each second, up to Burst. A zero or negative
// PerSecond means no limit. A Burst below 1 means max(1, ceil(PerSecond)).
type Rate struct {
	PerSecond float64
	Burst     int
}

func (r Rate) unlimited() bool { return !(r.PerSecond > 0) || math.IsInf(r.PerSecond, 1) }

func (r Rate) burst() int {
	if r.Burst >= 1 {
		return r.Burst
	}
	return max(1, int(math.Ceil(r.PerSecond)))
}

// String returns the form that RouteRates reads: "PerSecond:Burst", or "off".
func (r Rate) String() string {
	if r.unlimited() {
		return "off"
	}
	return strconv.FormatFloat(r.PerSecond, 'g', -1, 64) + ":" + strconv.Itoa(r.burst())
}

// Decision is the outcome of one rate-limit check.
type Decision struct {
	Allowed bool
	// Limit is the bucket size (the burst).
	Limit int
	// Remaining is the number of requests the caller could make right now.
	Remaining int
	// RetryAfter is how long a refused caller must wait for one token; zero when Allowed.
	RetryAfter time.Duration
	// Reset is how long until the bucket is full again.
	Reset time.Duration
}

// Limiter limits the request rate of each caller with a token bucket per caller, per route.
//
// Buckets are GCRA cells (one atomic "theoretical arrival time" each), so a check is a map read and
// a compare-and-swap, with no lock held and no allocation once the caller is known. The number of
// callers tracked is bounded (WithMaxKeys); when the bound is reached, full buckets are dropped
// first (a full bucket is indistinguishable from a new one, so this loses nothing) and then the
// fullest of a random sample. A Limiter is safe for concurrent use.
type Limiter struct {
	def    *policy
	routes map[string]*policy
	keys   []KeyFunc
	route  func(*http.Request) string
	clock  func() int64 // nanoseconds since construction

	headers  bool
	logger   *slog.Logger
	limited  metric.Int64Counter
	problems func(w http.ResponseWriter, r *http.Request, status int, detail string)
}

// NewLimiter returns a Limiter that allows each caller rate (and each route its own rate, with
// WithRouteRates). Callers are keyed by client address unless WithKeys says otherwise.
func NewLimiter(rate Rate, opts ...Option) (*Limiter, error) {
	o := newOptions(opts)
	l := &Limiter{
		keys:     o.keys,
		route:    o.route,
		clock:    o.monotonic(o.now()),
		headers:  o.headers,
		logger:   o.Logger,
		problems: o.problems,
	}
	if len(l.keys) == 0 {
		l.keys = []KeyFunc{KeyIP(&ClientIP{})}
	}
	l.def = newPolicy("default", rate, o.maxKeys)
	if len(o.routeRates) > 0 {
		l.routes = make(map[string]*policy, len(o.routeRates))
		for pattern, r := range o.routeRates {
			l.routes[pattern] = newPolicy(pattern, r, o.maxKeys)
		}
	}
	in := obs.NewInstruments(o.Meters, semconv.ScopeGuard)
	l.limited = in.Counter(semconv.MetricServerRateLimited, semconv.UnitRequest, "Requests refused by the rate limiter.")
	if err := in.Err(); err != nil {
		return nil, fmt.Errorf("guard: rate limiter metrics: %w", err)
	}
	return l, nil
}

// WithKeys sets how callers are told apart, tried in order: the first function that returns a
// non-empty key names the caller. Keys from different functions never share a bucket. The default
// is KeyIP(&ClientIP{}) (the connection's address).
func WithKeys(keys ...KeyFunc) Option {
	return optionFunc(func(o *options) { o.keys = append([]KeyFunc(nil), keys...) })
}

// WithRouteRates sets per-route rates, keyed by route template (the ServeMux pattern, for example
// "POST /orders"). Routes not listed use the Limiter's default rate; a Rate with PerSecond 0
// exempts a route.
func WithRouteRates(rates map[string]Rate) Option {
	return optionFunc(func(o *options) {
		o.routeRates = make(map[string]Rate, len(rates))
		for k, v := range rates {
			o.routeRates[k] = v
		}
	})
}

// WithMaxKeys bounds the number of callers tracked per policy (default DefaultMaxKeys; about 100
// bytes each).
func WithMaxKeys(n int) Option {
	return optionFunc(func(o *options) {
		if n > 0 {
			o.maxKeys = n
		}
	})
}

// WithHeaders turns the RateLimit and RateLimit-Policy headers on successful responses on or off
// (default on). Refusals always carry them, with Retry-After.
func WithHeaders(on bool) Option { return optionFunc(func(o *options) { o.headers = on }) }

// Allow takes one token from the bucket of caller key on route ("" for the default policy) and
// reports the decision. It is the non-HTTP entry point; the middleware uses the same buckets, with
// keys scoped to the KeyFunc that produced them.
func (l *Limiter) Allow(route, key string) Decision {
	p := l.policy(route)
	if p.unlimited {
		return Decision{Allowed: true, Limit: math.MaxInt, Remaining: math.MaxInt}
	}
	return p.allow(bucketKey{kind: kindDirect, id: key}, l.clock())
}

func (l *Limiter) policy(route string) *policy {
	if l.routes != nil && route != "" {
		if p, ok := l.routes[route]; ok {
			return p
		}
	}
	return l.def
}

// kindDirect scopes keys passed to Allow; kindNone is the bucket shared by requests no KeyFunc
// could name (for example over a Unix socket).
const (
	kindDirect = 254
	kindNone   = 255
)

// Middleware refuses requests over their caller's rate with 429 Too Many Requests, Retry-After,
// and the IETF RateLimit and RateLimit-Policy headers (draft-ietf-httpapi-ratelimit-headers), as
// application/problem+json.
//
// A nil *Limiter returns next unchanged.
func (l *Limiter) Middleware(next http.Handler) http.Handler {
	if l == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := ""
		p := l.def
		if l.routes != nil {
			route = l.route(r)
			p = l.policy(route)
		}
		if p.unlimited {
			next.ServeHTTP(w, r)
			return
		}
		k := bucketKey{kind: kindNone}
		for i, f := range l.keys {
			if id := f(r); id != "" {
				k = bucketKey{kind: uint8(min(i, kindRPC-1)), id: id}
				break
			}
		}
		d := p.allow(k, l.clock())
		if d.Allowed {
			if l.headers {
				p.writeHeaders(w.Header(), d)
			}
			next.ServeHTTP(w, r)
			return
		}
		l.refuse(w, r, route, p, k, d)
	})
}

// RPC callers are keyed apart from HTTP ones: kindRPC scopes the keys AllowRPC is given.
const kindRPC = 253

// AllowRPC is the Middleware's check for servers other than net/http (the gRPC server of package
// grpcx): caller names the caller (its authenticated subject, else its address), method is the
// full method name ("/pkg.Service/Method"), which is also the route that WithRouteRates
// (RATE_LIMIT_ROUTES) matches. A refusal is counted (chassis.server.rate_limited with rpc.method),
// traced and logged as the Middleware's. RPC callers have buckets of their own, apart from the
// buckets of HTTP requests, at the same rates.
func (l *Limiter) AllowRPC(ctx context.Context, method, caller string) Decision {
	p := l.policy(method)
	if p.unlimited {
		return Decision{Allowed: true, Limit: math.MaxInt, Remaining: math.MaxInt}
	}
	k := bucketKey{kind: kindRPC, id: caller}
	d := p.allow(k, l.clock())
	if !d.Allowed {
		l.record(ctx, semconv.AttrRPCMethod, method, p, k, d)
	}
	return d
}

// record counts, traces and logs a refusal; route is the value of the attribute named key.
func (l *Limiter) record(ctx context.Context, key, route string, p *policy, k bucketKey, d Decision) int64 {
	if route != "" {
		l.limited.Add(ctx, 1, metric.WithAttributes(attribute.String(key, route)))
	} else {
		l.limited.Add(ctx, 1)
	}
	retry := max(1, int64(math.Ceil(d.RetryAfter.Seconds())))
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(semconv.EventRateLimited)
	}
	if l.logger.Enabled(ctx, slog.LevelInfo) {
		l.logger.LogAttrs(ctx, slog.LevelInfo, "request rate limited",
			slog.String("reason", "rate_limit"),
			slog.String("policy", p.name),
			slog.String("route", route),
			slog.String("caller", k.id),
			slog.String("rate", p.rate.String()),
			slog.Int64("retry_after_s", retry))
	}
	return retry
}

func (l *Limiter) refuse(w http.ResponseWriter, r *http.Request, route string, p *policy, k bucketKey, d Decision) {
	if route == "" {
		route = l.route(r)
	}
	retry := l.record(r.Context(), semconv.AttrHTTPRoute, route, p, k, d)
	h := w.Header()
	p.writeHeaders(h, d)
	h.Set("Retry-After", strconv.FormatInt(retry, 10))
	detail := "rate limit of " + strconv.FormatFloat(p.rate.PerSecond, 'g', -1, 64) +
		" requests per second (burst " + strconv.Itoa(p.burst) + ") exceeded; retry in " + strconv.FormatInt(retry, 10) + " s"
	if l.problems != nil {
		l.problems(w, r, http.StatusTooManyRequests, detail)
		return
	}
	problem.Write(w, http.StatusTooManyRequests, "", detail)
}

type policy struct {
	name      string
	rate      Rate
	unlimited bool
	burst     int
	interval  int64 // nanoseconds per token
	tolerance int64 // burst * interval: how far ahead of now a bucket's arrival time may run
	header    []string
	quoted    string
	store     *store
}

func newPolicy(name string, r Rate, maxKeys int) *policy {
	p := &policy{name: name, rate: r, unlimited: r.unlimited()}
	if p.unlimited {
		return p
	}
	p.burst = r.burst()
	p.interval = max(1, int64(float64(time.Second)/r.PerSecond))
	p.tolerance = int64(p.burst) * p.interval
	p.quoted = sfString(name)
	window := max(1, int64(math.Ceil(float64(p.tolerance)/float64(time.Second))))
	p.header = []string{p.quoted + ";q=" + strconv.Itoa(p.burst) + ";w=" + strconv.FormatInt(window, 10)}
	p.store = newStore(maxKeys)
	return p
}

// allow applies GCRA: a request conforms when, after adding one interval to the bucket's
// theoretical arrival time, that time is no further than tolerance ahead of now.
func (p *policy) allow(k bucketKey, now int64) Decision {
	b := p.store.get(k, now)
	for {
		tat := b.tat.Load()
		next := max(tat, now) + p.interval
		ahead := next - now
		if ahead > p.tolerance {
			return Decision{
				Limit:      p.burst,
				RetryAfter: time.Duration(ahead - p.tolerance),
				Reset:      time.Duration(max(tat, now) - now),
			}
		}
		if b.tat.CompareAndSwap(tat, next) {
			return Decision{
				Allowed:   true,
				Limit:     p.burst,
				Remaining: int((p.tolerance - ahead) / p.interval),
				Reset:     time.Duration(ahead),
			}
		}
	}
}

// writeHeaders sets RateLimit-Policy ("name";q=burst;w=seconds to refill) and RateLimit
// ("name";r=remaining;t=seconds until full).
func (p *policy) writeHeaders(h http.Header, d Decision) {
	h["Ratelimit-Policy"] = p.header
	var buf [96]byte
	b := append(buf[:0], p.quoted...)
	b = append(b, ";r="...)
	b = strconv.AppendInt(b, int64(d.Remaining), 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, int64(math.Ceil(d.Reset.Seconds())), 10)
	h["Ratelimit"] = []string{string(b)}
}

// sfString quotes s as an RFC 8941 structured-field string.
func sfString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('_')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

type bucketKey struct {
	kind uint8
	id   string
}

type bucket struct {
	tat atomic.Int64 // theoretical arrival time, ns since the limiter's epoch
}

type shard struct {
	mu  sync.RWMutex
	m   map[bucketKey]*bucket
	cap int
	_   [24]byte // keep neighbouring shards' locks off one cache line
}

type store struct {
	seed   maphash.Seed
	mask   uint64
	shards []shard
}

func newStore(maxKeys int) *store {
	// About 16 keys per shard at least, at most 64 shards.
	n := 1
	for n < 64 && n*32 <= maxKeys {
		n *= 2
	}
	s := &store{seed: maphash.MakeSeed(), mask: uint64(n - 1), shards: make([]shard, n)}
	per := max(1, maxKeys/n)
	for i := range s.shards {
		s.shards[i].m = make(map[bucketKey]*bucket)
		s.shards[i].cap = per
	}
	return s
}

func (s *store) len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

func (s *store) get(k bucketKey, now int64) *bucket {
	sh := &s.shards[maphash.String(s.seed, k.id)&s.mask]
	sh.mu.RLock()
	b := sh.m[k]
	sh.mu.RUnlock()
	if b != nil {
		return b
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if b = sh.m[k]; b != nil {
		return b
	}
	if len(sh.m) >= sh.cap {
		sh.evict(now)
	}
	b = new(bucket)
	sh.m[bucketKey{kind: k.kind, id: strings.Clone(k.id)}] = b
	return b
}

// evict makes room for one key: it drops every full bucket among a random sample (Go's map
// iteration order is randomised) and, when none was full, the fullest one sampled.
func (sh *shard) evict(now int64) {
	const sample = 16
	var oldest bucketKey
	oldestTAT := int64(math.MaxInt64)
	freed, seen := 0, 0
	for k, b := range sh.m {
		tat := b.tat.Load()
		if tat <= now {
			delete(sh.m, k)
			freed++
		} else if tat < oldestTAT {
			oldest, oldestTAT = k, tat
		}
		if seen++; seen >= sample {
			break
		}
	}
	if freed == 0 && oldestTAT != math.MaxInt64 {
		delete(sh.m, oldest)
	}
}

// RouteRates maps route templates to rates. It decodes from an environment value such as
// "POST /orders=10:20; GET /items/{id}=100; GET /export=off" (entries separated by ';', each
// PATTERN=PER_SECOND[:BURST] or PATTERN=off).
type RouteRates map[string]Rate

// UnmarshalText implements encoding.TextUnmarshaler (and so decodes from envconfig).
func (rr *RouteRates) UnmarshalText(text []byte) error {
	out := RouteRates{}
	for _, entry := range strings.Split(string(text), ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		i := strings.LastIndexByte(entry, '=')
		if i <= 0 {
			return fmt.Errorf("%q: want PATTERN=PER_SECOND[:BURST], for example \"POST /orders=10:20\"", entry)
		}
		pattern, spec := strings.TrimSpace(entry[:i]), strings.TrimSpace(entry[i+1:])
		r, err := parseRate(spec)
		if err != nil {
			return fmt.Errorf("%q: %w", entry, err)
		}
		out[pattern] = r
	}
	*rr = out
	return nil
}

// Bounds of a per-route rate in RATE_LIMIT_ROUTES, the same as those of RATE_LIMIT_RPS and
// RATE_LIMIT_BURST (RateLimitConfig's validate tags).
const (
	minRoutePerSecond = 0.001
	maxRoutePerSecond = 1_000_000_000
	maxRouteBurst     = 1_000_000
)

func parseRate(s string) (Rate, error) {
	if strings.EqualFold(s, "off") {
		return Rate{}, nil
	}
	perS, burstS, hasBurst := strings.Cut(s, ":")
	// The same bounds as RATE_LIMIT_RPS and RATE_LIMIT_BURST: a rate so small that it rounds to
	// nothing, or a burst so large that the refill time overflows Retry-After, is a typo.
	f, err := strconv.ParseFloat(strings.TrimSuffix(perS, "/s"), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || (f > 0 && f < minRoutePerSecond) || f > maxRoutePerSecond {
		return Rate{}, fmt.Errorf("rate %q is not a number of requests per second from %g to %g (or 0)", perS,
			minRoutePerSecond, float64(maxRoutePerSecond))
	}
	r := Rate{PerSecond: f}
	if hasBurst {
		b, err := strconv.Atoi(burstS)
		if err != nil || b < 1 || b > maxRouteBurst || burstS != strconv.Itoa(b) {
			return Rate{}, fmt.Errorf("burst %q is not a whole number from 1 to %d", burstS, maxRouteBurst)
		}
		r.Burst = b
	}
	return r, nil
}
