package dynconfig_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/time/rate"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/coordination/dynconfig"
	"github.com/cloudchassis/kit/internal/consultest"
)

// TestRealConsulReload runs against a real Consul agent: a valid rate limit written to KV takes
// effect in a running limiter without a restart; an invalid one is rejected, the old value stays,
// and the error is visible on the handler.
func TestRealConsulReload(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	agent := consultest.StartDev(t)
	type settings struct {
		Port      int     `envconfig:"PORT" default:"8080"`
		RateLimit float64 `envconfig:"RATE_LIMIT" default:"100" validate:"gt=0" reload:"true"`
	}
	cfg, err := dynconfig.New[settings](dynconfig.NewConsulKV(agent.Client), "config/orders",
		dynconfig.WithLookup(config.MapLookup(map[string]string{"RATE_LIMIT": "50"})))
	if err != nil {
		t.Fatal(err)
	}
	limiter := rate.NewLimiter(rate.Limit(cfg.Load().RateLimit), 1)
	changes := make(chan []string, 4)
	defer cfg.Subscribe(func(c dynconfig.Change[settings]) {
		limiter.SetLimit(rate.Limit(c.New.Value.RateLimit))
		changes <- c.Changed
	})()
	ctx := context.Background()
	if err := cfg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer cfg.Stop(ctx)
	if limiter.Limit() != 50 {
		t.Fatalf("limit %v before any KV value, want the environment's 50", limiter.Limit())
	}

	put := func(k, v string) {
		if _, err := agent.Client.KV().Put(&api.KVPair{Key: k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put("config/orders/RATE_LIMIT", "200")
	select {
	case changed := <-changes:
		if strings.Join(changed, ",") != "RATE_LIMIT" || limiter.Limit() != 200 {
			t.Fatalf("changed %v, limit %v; want RATE_LIMIT and 200", changed, limiter.Limit())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the KV change did not arrive")
	}

	put("config/orders/RATE_LIMIT", "-5")
	var rejected *dynconfig.RejectedError
	deadline := time.Now().Add(10 * time.Second)
	for !errors.As(cfg.Err(), &rejected) {
		if time.Now().After(deadline) {
			t.Fatal("the invalid value was not rejected")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if cfg.Load().RateLimit != 200 || limiter.Limit() != 200 {
		t.Fatalf("after an invalid value: config %v, limiter %v; want the old 200", cfg.Load().RateLimit, limiter.Limit())
	}
	rec := httptest.NewRecorder()
	cfg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/debug/config", nil))
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("handler: %v: %s", err, rec.Body)
	}
	if !strings.Contains(rec.Body.String(), "RATE_LIMIT") || !strings.Contains(rec.Body.String(), "-5") && !strings.Contains(rec.Body.String(), "greater than") {
		t.Fatalf("the rejection is not visible on the handler:\n%s", rec.Body)
	}
	t.Logf("rejected: %v", rejected.Err)
}
