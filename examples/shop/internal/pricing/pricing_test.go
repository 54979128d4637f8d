package pricing_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/chassistest"
	"github.com/cloudchassis/kit/examples/shop/internal/pricing"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, chassistest.LeakOptions()...) }

func start(t *testing.T, env map[string]string, opts ...chassistest.Option) *chassistest.Instance {
	var cfg pricing.Config
	return chassistest.Start(t, pricing.Name, pricing.Setup(&cfg),
		append([]chassistest.Option{chassistest.WithChassisOptions(pricing.Options(&cfg)...), chassistest.WithEnv(env)}, opts...)...)
}

func TestPrices(t *testing.T) {
	in := start(t, map[string]string{"PRICING_CURRENCY": "USD"})
	res, body := in.Get(t, "/prices/p-001")
	var p shop.Price
	if err := json.Unmarshal([]byte(body), &p); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET /prices/p-001: %d %s", res.StatusCode, body)
	}
	if p != pricing.PriceOf("p-001", "USD") || p.Cents < 100 || p.Cents > 50099 {
		t.Errorf("price %+v", p)
	}
	res, body = in.Get(t, "/prices?ids=p-001,p-002")
	var ps []shop.Price
	if err := json.Unmarshal([]byte(body), &ps); err != nil || res.StatusCode != http.StatusOK || len(ps) != 2 || ps[0] != p {
		t.Errorf("batch: %d %s", res.StatusCode, body)
	}
	if res, _ := in.Get(t, "/prices?ids=a,,b"); res.StatusCode != http.StatusBadRequest {
		t.Errorf("empty id in batch: %d, want 400", res.StatusCode)
	}
	ids := strings.Repeat("x,", pricing.MaxBatch) + "x"
	if res, _ := in.Get(t, "/prices?ids="+ids); res.StatusCode != http.StatusBadRequest {
		t.Errorf("%d ids: %d, want 400", pricing.MaxBatch+1, res.StatusCode)
	}
	// Without CHAOS_ENABLED there are no knobs.
	req, _ := http.NewRequest(http.MethodPut, "/chaos", strings.NewReader(`{"error_rate":1}`))
	if res, _ := in.Do(t, req); res.StatusCode != http.StatusNotFound && res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT /chaos without CHAOS_ENABLED: %d", res.StatusCode)
	}
}

func put(t *testing.T, in *chassistest.Instance, token, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "/chaos", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, _ := in.Do(t, req)
	return res
}

func TestChaosKnobs(t *testing.T) {
	in := start(t, map[string]string{"CHAOS_ENABLED": "true", "CHAOS_TOKEN": "s3cret"})
	if res := put(t, in, "", `{"error_rate":1}`); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("without the token: %d, want 401", res.StatusCode)
	}
	if res := put(t, in, "wrong", `{"error_rate":1}`); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong token: %d, want 401", res.StatusCode)
	}
	if res := put(t, in, "s3cret", `{"error_rate":2}`); res.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("error_rate 2: %d, want 422", res.StatusCode)
	}
	if res := put(t, in, "s3cret", `{"latency":"-1s"}`); res.StatusCode != http.StatusBadRequest {
		t.Errorf("negative latency: %d, want 400", res.StatusCode)
	}

	if res := put(t, in, "s3cret", `{"error_rate":1}`); res.StatusCode != http.StatusOK {
		t.Fatalf("error_rate 1: %d", res.StatusCode)
	}
	if res, _ := in.Get(t, "/prices/p-001"); res.StatusCode != http.StatusInternalServerError {
		t.Errorf("with error_rate 1: %d, want 500", res.StatusCode)
	}
	if res := put(t, in, "s3cret", `{"storm":"1m"}`); res.StatusCode != http.StatusOK {
		t.Fatalf("storm: %d", res.StatusCode)
	}
	res, _ := in.Get(t, "/prices/p-001")
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Errorf("storm: %d Retry-After %q, want 503 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"))
	}
	req, _ := http.NewRequest(http.MethodGet, "/chaos", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	res, body := in.Do(t, req)
	var f pricing.Faults
	if err := json.Unmarshal([]byte(body), &f); err != nil || res.StatusCode != http.StatusOK || f.Storm <= 0 || time.Duration(f.Storm) > time.Minute {
		t.Errorf("GET /chaos: %d %s", res.StatusCode, body)
	}
	req, _ = http.NewRequest(http.MethodDelete, "/chaos", nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	if res, _ := in.Do(t, req); res.StatusCode != http.StatusNoContent {
		t.Errorf("DELETE /chaos: %d", res.StatusCode)
	}
	if res, _ := in.Get(t, "/prices/p-001"); res.StatusCode != http.StatusOK {
		t.Errorf("after DELETE: %d, want 200", res.StatusCode)
	}
}

// Injected latency runs on the request's clock: in a synctest bubble a 2 s delay takes no wall time,
// and a caller that gives up after 500 ms gets no answer.
func TestChaosLatencyInSynctest(t *testing.T) {
	in := start(t, map[string]string{"CHAOS_ENABLED": "true"}, chassistest.InMemory())
	if res := put(t, in, "", `{"latency":"2s"}`); res.StatusCode != http.StatusOK {
		t.Fatalf("PUT latency: %d", res.StatusCode)
	}
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if res, _ := in.Get(t, "/prices/p-001"); res.StatusCode != http.StatusOK {
			t.Errorf("status %d", res.StatusCode)
		}
		if took := time.Since(start); took != 2*time.Second {
			t.Errorf("took %v of bubble time, want exactly 2s", took)
		}
	})
}

func TestChaosLatencyRate(t *testing.T) {
	c := pricing.NewChaos()
	c.Set(pricing.Faults{Latency: pricing.Duration(time.Second), LatencyRate: 0.5, ErrorRate: 0})
	if f := c.Faults(); f.LatencyRate != 0.5 || time.Duration(f.Latency) != time.Second || f.Storm != 0 {
		t.Errorf("Faults() = %+v", f)
	}
}

func TestDurationJSON(t *testing.T) {
	var f pricing.Faults
	if err := json.Unmarshal([]byte(`{"latency":"150ms","storm":5000000000}`), &f); err != nil {
		t.Fatal(err)
	}
	if time.Duration(f.Latency) != 150*time.Millisecond || time.Duration(f.Storm) != 5*time.Second {
		t.Errorf("%+v", f)
	}
	b, _ := json.Marshal(pricing.Faults{Latency: pricing.Duration(time.Second)})
	if !strings.Contains(string(b), `"latency":"1s"`) {
		t.Errorf("marshal: %s", b)
	}
	for _, bad := range []string{`"abc"`, `"-1s"`, `-5`, `true`, `{}`} {
		var d pricing.Duration
		if err := json.Unmarshal([]byte(bad), &d); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func FuzzDuration(f *testing.F) {
	for _, s := range []string{`"1s"`, `"150ms"`, `5`, `"-1s"`, `""`, `null`, `"1h2m3.5s"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var d pricing.Duration
		if err := json.Unmarshal([]byte(s), &d); err != nil {
			return
		}
		// Whatever parsed must survive a round trip.
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var back pricing.Duration
		if err := json.Unmarshal(b, &back); err != nil || back != d {
			t.Fatalf("%s -> %s -> %v (%v)", s, b, time.Duration(back), err)
		}
	})
}

func ExamplePriceOf() {
	p := pricing.PriceOf("p-001", "EUR")
	fmt.Printf("%s %d.%02d %s\n", p.ProductID, p.Cents/100, p.Cents%100, p.Currency)
	// Output: p-001 438.49 EUR
}
