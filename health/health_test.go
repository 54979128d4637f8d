package health_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudchassis/kit/health"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ok(context.Context) error { return nil }

func TestReadinessFollowsState(t *testing.T) {
	c := health.New()
	c.Add(health.Readiness, health.Check{Name: "db", Func: ok})
	ctx := context.Background()
	if r := c.Check(ctx, health.Readiness); r.Status != health.StatusStarting || r.OK() {
		t.Fatalf("before start: %+v", r)
	}
	if r := c.Check(ctx, health.Startup); r.Status != health.StatusStarting {
		t.Fatalf("startup before MarkStarted: %+v", r)
	}
	c.MarkStarted()
	if r := c.Check(ctx, health.Readiness); r.Status != health.StatusOK || r.Checks["db"].Status != health.StatusOK {
		t.Fatalf("started: %+v", r)
	}
	c.MarkDraining()
	if r := c.Check(ctx, health.Readiness); r.Status != health.StatusDraining || r.OK() {
		t.Fatalf("draining: %+v", r)
	}
	if r := c.Check(ctx, health.Liveness); !r.OK() {
		t.Fatalf("liveness must pass while draining: %+v", r)
	}
	if !c.Draining() {
		t.Fatal("Draining() = false")
	}
}

func TestCriticalAndNonCritical(t *testing.T) {
	c := health.New(health.WithCacheTTL(0))
	c.MarkStarted()
	bad := errors.New("connection refused")
	c.Add(health.Readiness, health.Check{Name: "cache", Func: func(context.Context) error { return bad }, NonCritical: true})
	r := c.Check(context.Background(), health.Readiness)
	if r.Status != health.StatusDegraded || !r.OK() || r.Checks["cache"].Error != "connection refused" || r.Checks["cache"].Critical {
		t.Fatalf("non-critical: %+v", r)
	}
	c.Add(health.Readiness, health.Check{Name: "db", Func: func(context.Context) error { return bad }})
	if r := c.Check(context.Background(), health.Readiness); r.Status != health.StatusFail {
		t.Fatalf("critical: %+v", r)
	}
}

func TestChecksRunConcurrentlyWithTimeouts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := health.New(health.WithCacheTTL(0))
		c.MarkStarted()
		slow := func(ctx context.Context) error {
			select {
			case <-time.After(time.Second):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		c.Add(health.Liveness, health.Check{Name: "a", Func: slow, Timeout: 3 * time.Second})
		c.Add(health.Liveness, health.Check{Name: "b", Func: slow, Timeout: 3 * time.Second})
		c.Add(health.Liveness, health.Check{Name: "slow", Func: slow, Timeout: 500 * time.Millisecond})
		t0 := time.Now()
		r := c.Check(context.Background(), health.Liveness)
		if d := time.Since(t0); d != time.Second {
			t.Fatalf("checks took %v; concurrent would take 1s", d)
		}
		if r.Checks["slow"].Status != health.StatusFail || r.Checks["a"].Status != health.StatusOK {
			t.Fatalf("%+v", r)
		}
		if got := r.Checks["slow"].Duration; got != 500*time.Millisecond {
			t.Fatalf("slow duration %v", got)
		}
	})
}

func TestAbandonsCheckThatIgnoresContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := health.New(health.WithCacheTTL(0))
		release := make(chan struct{})
		c.Add(health.Liveness, health.Check{Name: "stuck", Timeout: time.Second, Func: func(context.Context) error {
			<-release
			return nil
		}})
		r := c.Check(context.Background(), health.Liveness)
		if r.Status != health.StatusFail || r.Checks["stuck"].Error != "timed out after 1s" {
			t.Fatalf("%+v", r)
		}
		close(release)
		synctest.Wait()
	})
}

func TestPanickingCheckFails(t *testing.T) {
	c := health.New()
	c.Add(health.Liveness, health.Check{Name: "p", Func: func(context.Context) error { panic("oops") }})
	r := c.Check(context.Background(), health.Liveness)
	if r.Status != health.StatusFail || r.Checks["p"].Error != "check panicked: oops" {
		t.Fatalf("%+v", r)
	}
}

func TestCacheAndSharedEvaluation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var runs atomic.Int32
		c := health.New(health.WithCacheTTL(time.Second))
		c.MarkStarted()
		c.Add(health.Readiness, health.Check{Name: "dep", Func: func(ctx context.Context) error {
			runs.Add(1)
			time.Sleep(100 * time.Millisecond)
			return nil
		}})
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				if r := c.Check(context.Background(), health.Readiness); !r.OK() {
					t.Errorf("%+v", r)
				}
			})
		}
		wg.Wait()
		if n := runs.Load(); n != 1 {
			t.Fatalf("50 concurrent probes ran the check %d times, want 1", n)
		}
		time.Sleep(500 * time.Millisecond)
		c.Check(context.Background(), health.Readiness)
		if n := runs.Load(); n != 1 {
			t.Fatalf("cached result not reused: %d runs", n)
		}
		time.Sleep(time.Second)
		c.Check(context.Background(), health.Readiness)
		if n := runs.Load(); n != 2 {
			t.Fatalf("stale result reused: %d runs", n)
		}
	})
}

func TestHandler(t *testing.T) {
	c := health.New()
	mux := http.NewServeMux()
	c.Register(mux)
	c.Add(health.Liveness, health.Check{Name: "goroutines", Func: ok})
	get := func(path string) (int, map[string]any) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s: %v: %s", path, err, rec.Body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("content type %q", ct)
		}
		return rec.Code, body
	}
	if code, body := get("/readyz"); code != 503 || body["status"] != "starting" {
		t.Fatalf("readyz before start: %d %v", code, body)
	}
	if code, body := get("/startupz"); code != 503 {
		t.Fatalf("startupz before start: %d %v", code, body)
	}
	code, body := get("/livez")
	checks, _ := body["checks"].(map[string]any)
	g, _ := checks["goroutines"].(map[string]any)
	if code != 200 || g["status"] != "ok" || g["duration"] == nil || g["critical"] != true {
		t.Fatalf("livez: %d %v", code, body)
	}
	c.MarkStarted()
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("readyz after start: %d", code)
	}
	if code, _ := get("/startupz"); code != 200 {
		t.Fatalf("startupz after start: %d", code)
	}
	c.MarkDraining()
	if code, body := get("/readyz"); code != 503 || body["status"] != "draining" {
		t.Fatalf("readyz draining: %d %v", code, body)
	}
}
