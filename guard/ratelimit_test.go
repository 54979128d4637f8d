package guard_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudchassis/kit/guard"
	"github.com/cloudchassis/kit/problem"
)

func ok(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }

func request(remote string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/items/1", nil)
	r.RemoteAddr = remote
	return r
}

// drive sends one request every period for dur of (virtual) time from each caller whose rate (in
// requests per period) is given, and returns how many each had allowed.
func drive(t *testing.T, h http.Handler, dur, period time.Duration, callers map[string]int) map[string]int {
	t.Helper()
	allowed := map[string]int{}
	for end := time.Now().Add(dur); time.Now().Before(end); time.Sleep(period) {
		for ip, n := range callers {
			for range n {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, request(ip+":1234"))
				switch rec.Code {
				case http.StatusNoContent:
					allowed[ip]++
				case http.StatusTooManyRequests:
				default:
					t.Fatalf("status %d", rec.Code)
				}
			}
		}
	}
	return allowed
}

func within(t *testing.T, what string, got, want int, tol float64) {
	t.Helper()
	if d := float64(got-want) / float64(want); d > tol || d < -tol {
		t.Errorf("%s: %d allowed, want %d ±%.0f%%", what, got, want, tol*100)
	}
}

func TestLimiterAccuracyOverTenSeconds(t *testing.T) {
	for _, rate := range []guard.Rate{{PerSecond: 100, Burst: 10}, {PerSecond: 7, Burst: 1}, {PerSecond: 333, Burst: 50}} {
		t.Run(rate.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				lim := must(guard.NewLimiter(rate))
				h := lim.Middleware(http.HandlerFunc(ok))
				// The caller offers 1000 requests per second, far above every rate tested.
				got := drive(t, h, 10*time.Second, time.Millisecond, map[string]int{"192.0.2.1": 1})
				want := int(rate.PerSecond*10) + rate.Burst
				within(t, "caller", got["192.0.2.1"], want, 0.05)
			})
		})
	}
}

func TestLimiterNoisyCallerDoesNotStarveOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := must(guard.NewLimiter(guard.Rate{PerSecond: 100, Burst: 20}))
		h := lim.Middleware(http.HandlerFunc(ok))
		// Per 10 ms: the noisy caller sends 20 requests (2000/s), the quiet one 1 (100/s, its full rate).
		got := drive(t, h, 10*time.Second, 10*time.Millisecond, map[string]int{"192.0.2.66": 20, "192.0.2.7": 1})
		within(t, "noisy caller", got["192.0.2.66"], 100*10+20, 0.05)
		if got["192.0.2.7"] != 1000 {
			t.Errorf("quiet caller: %d of 1000 allowed, want all", got["192.0.2.7"])
		}
	})
}

func TestLimiterRefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := must(guard.NewLimiter(guard.Rate{PerSecond: 2, Burst: 3}))
		h := lim.Middleware(http.HandlerFunc(ok))
		for i := range 3 {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, request("192.0.2.1:1"))
			if rec.Code != http.StatusNoContent {
				t.Fatalf("request %d: status %d", i, rec.Code)
			}
			if got, want := rec.Header().Get("RateLimit"), fmt.Sprintf(`"default";r=%d;t=%d`, 2-i, []int{1, 1, 2}[i]); got != want {
				t.Errorf("request %d: RateLimit = %q, want %q", i, got, want)
			}
			if got := rec.Header().Get("RateLimit-Policy"); got != `"default";q=3;w=2` {
				t.Errorf("RateLimit-Policy = %q", got)
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, request("192.0.2.1:1"))
		if rec.Code != http.StatusTooManyRequests {
			t.Fatalf("status %d, want 429", rec.Code)
		}
		if got := rec.Header().Get("Retry-After"); got != "1" {
			t.Errorf("Retry-After = %q, want 1", got)
		}
		if got := rec.Header().Get("Content-Type"); got != problem.ContentType {
			t.Errorf("Content-Type = %q", got)
		}
		var d problem.Details
		if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || d.Status != 429 || !strings.Contains(d.Detail, "2 requests per second") {
			t.Errorf("body = %s (%v)", rec.Body, err)
		}
		// Half a second later one token is back.
		time.Sleep(500 * time.Millisecond)
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, request("192.0.2.1:1"))
		if rec.Code != http.StatusNoContent {
			t.Fatalf("after refill: status %d", rec.Code)
		}
	})
}

func TestLimiterPerRoute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mux := http.NewServeMux()
		mux.HandleFunc("POST /orders", ok)
		mux.HandleFunc("GET /items/{id}", ok)
		mux.HandleFunc("GET /export", ok)
		lim := must(guard.NewLimiter(guard.Rate{PerSecond: 1, Burst: 1},
			guard.WithRouteRates(map[string]guard.Rate{"POST /orders": {PerSecond: 1, Burst: 5}, "GET /export": {}}),
			guard.WithRouteFunc(guard.MuxRoute(mux))))
		h := lim.Middleware(mux)
		count := func(method, path string, n int) int {
			allowed := 0
			for range n {
				r := httptest.NewRequest(method, path, nil)
				r.RemoteAddr = "192.0.2.1:1"
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				if rec.Code == http.StatusNoContent {
					allowed++
				}
			}
			return allowed
		}
		if got := count("POST", "/orders", 10); got != 5 {
			t.Errorf("POST /orders: %d allowed, want 5 (route burst)", got)
		}
		if got := count("GET", "/items/1", 10); got != 1 {
			t.Errorf("GET /items/1: %d allowed, want 1 (default, separate bucket)", got)
		}
		if got := count("GET", "/items/2", 10); got != 0 {
			t.Errorf("GET /items/2: %d allowed, want 0 (same route template as /items/1)", got)
		}
		if got := count("GET", "/export", 10); got != 10 {
			t.Errorf("GET /export: %d allowed, want 10 (route exempt)", got)
		}
	})
}

func TestLimiterKeysAreScopedByKind(t *testing.T) {
	// A caller whose API key equals another caller's address must not share its bucket.
	lim := must(guard.NewLimiter(guard.Rate{PerSecond: 1, Burst: 1},
		guard.WithKeys(guard.KeyHeader("X-API-Key"), guard.KeyIP(&guard.ClientIP{}))))
	h := lim.Middleware(http.HandlerFunc(ok))
	r := request("192.0.2.9:1")
	r.Header.Set("X-API-Key", "192.0.2.1")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	rec2 := httptest.NewRecorder()
	h.ServeHTTP(rec2, request("192.0.2.1:1"))
	if rec.Code != http.StatusNoContent || rec2.Code != http.StatusNoContent {
		t.Fatalf("statuses %d, %d: keys of different kinds shared a bucket", rec.Code, rec2.Code)
	}
}

func TestLimiterBoundedKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lim := must(guard.NewLimiter(guard.Rate{PerSecond: 1, Burst: 2}, guard.WithMaxKeys(1000)))
		for i := range 20000 {
			lim.Allow("", fmt.Sprintf("caller-%d", i))
		}
		if n := guard.KeyCount(lim); n > 1000 {
			t.Fatalf("%d keys tracked, bound is 1000", n)
		}
		// An active caller that keeps its bucket non-full survives most of a flood of new keys
		// only if sampled eviction prefers full buckets: check that drained buckets are kept
		// in preference to idle ones once time has passed.
		time.Sleep(10 * time.Second) // every bucket above is full again (idle)
		lim.Allow("", "active")
		lim.Allow("", "active")
		for i := range 500 {
			lim.Allow("", fmt.Sprintf("new-%d", i))
		}
		if d := lim.Allow("", "active"); d.Allowed {
			t.Fatalf("active caller's drained bucket was evicted while idle ones were available")
		}
	})
}

func TestLimiterNil(t *testing.T) {
	var lim *guard.Limiter
	h := lim.Middleware(http.HandlerFunc(ok))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, request("192.0.2.1:1"))
	if rec.Code != http.StatusNoContent {
		t.Fatal("nil limiter must pass requests through")
	}
	if must((guard.RateLimitConfig{}).NewLimiter(nil)) != nil {
		t.Fatal("a config without rates must give no limiter")
	}
}

func TestRateLimitConfig(t *testing.T) {
	var rr guard.RouteRates
	if err := rr.UnmarshalText([]byte("POST /orders=10:20; GET /items/{id}=100/s ;GET /export=off")); err != nil {
		t.Fatal(err)
	}
	want := guard.RouteRates{"POST /orders": {PerSecond: 10, Burst: 20}, "GET /items/{id}": {PerSecond: 100}, "GET /export": {}}
	if fmt.Sprint(rr) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", rr, want)
	}
	for _, bad := range []string{"POST /orders", "x=-1", "x=1:0", "x=abc", "x=NaN", "x=Inf", "x=1e-300", "x=2e9",
		"x=1:10000000000", "x=1:2000000", "x=1:010", "x=1:+5", "x=0x10"} {
		if err := rr.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	var p guard.Prefixes
	if err := p.UnmarshalText([]byte("10.0.0.0/8, 192.168.1.7 ,fd00::/8")); err != nil {
		t.Fatal(err)
	}
	if got := p.String(); got != "10.0.0.0/8,192.168.1.7/32,fd00::/8" {
		t.Fatalf("prefixes = %s", got)
	}
	if err := p.UnmarshalText([]byte("10.0.0.0/33")); err == nil {
		t.Fatal("bad prefix accepted")
	}
	cfg := guard.RateLimitConfig{RPS: 1, Burst: 1, TrustedProxies: guard.Prefixes{netip.MustParsePrefix("10.0.0.0/8")}, KeyHeader: "X-API-Key"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (guard.RateLimitConfig{RPS: -1, Burst: -1, IPv6Prefix: 200}).Validate(); err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Fatalf("Validate must report all three problems, got %v", err)
	}
	lim := must(cfg.NewLimiter(nil))
	h := lim.Middleware(http.HandlerFunc(ok))
	r := request("10.1.1.1:1")
	r.Header.Set("X-Forwarded-For", "203.0.113.5")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	rec = httptest.NewRecorder()
	r = request("10.1.1.2:1")
	r.Header.Set("X-Forwarded-For", "203.0.113.5")
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("the same client behind two trusted proxies must share a bucket: %d", rec.Code)
	}
}

func ExampleLimiter() {
	lim := must(guard.NewLimiter(guard.Rate{PerSecond: 1, Burst: 2}))
	h := lim.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	for range 3 {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = "198.51.100.7:5555"
		h.ServeHTTP(rec, r)
		fmt.Printf("%d RateLimit: %s Retry-After: %q\n", rec.Code, rec.Header().Get("RateLimit"), rec.Header().Get("Retry-After"))
	}
	// Output:
	// 200 RateLimit: "default";r=1;t=1 Retry-After: ""
	// 200 RateLimit: "default";r=0;t=2 Retry-After: ""
	// 429 RateLimit: "default";r=0;t=2 Retry-After: "1"
}

func TestLimiterInjectedClock(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	lim := must(guard.NewLimiter(guard.Rate{PerSecond: 10, Burst: 1}, guard.WithClock(func() time.Time { return now })))
	if !lim.Allow("", "a").Allowed {
		t.Fatal("first request refused")
	}
	d := lim.Allow("", "a")
	if d.Allowed || d.RetryAfter != 100*time.Millisecond {
		t.Fatalf("second request: %+v, want refused with RetryAfter 100ms", d)
	}
	now = now.Add(100 * time.Millisecond)
	if !lim.Allow("", "a").Allowed {
		t.Fatal("refused after the interval")
	}
}
