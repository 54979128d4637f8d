package bench

// Client call overhead: one GET through each client stack to an in-memory transport (no network, so
// only the stack's own cost is measured), beside a bare http.Client:
//   - Chassis: resilience.Dependency (dependency breaker, overall timeout, retry with budget,
//     per-instance breaker, per-attempt timeout, deadline header) around discovery/lb (P2C, 3
//     instances), metrics recorded by the OTel SDK into a manual reader;
//   - go-kit: sd/lb.Retry over a round robin of 3 endpoints, each behind a sony/gobreaker/v2 breaker;
//   - failsafe-go: its executor with a retry policy and a circuit breaker around the transport.
//
//	cd bench && go test -run '^$' -bench Resilience -benchmem -count 6

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	kitlb "github.com/go-kit/kit/sd/lb"
	"github.com/sony/gobreaker/v2"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/resilience"
)

// memTransport answers every request with 200 and a two-byte body, like a tiny JSON service.
type memTransport struct{}

func (memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("ok")), Request: r, Header: http.Header{}}, nil
}

func doGet(b *testing.B, c *http.Client, url string) {
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func BenchmarkResilienceBare(b *testing.B) {
	c := &http.Client{Transport: memTransport{}}
	b.ReportAllocs()
	for b.Loop() {
		doGet(b, c, "http://10.0.0.1:80/x")
	}
}

// BenchmarkResilienceBareTimeout is the baseline for BenchmarkResilienceChassisDefaults: a bare
// client that also bounds each call, as every production client must.
func BenchmarkResilienceBareTimeout(b *testing.B) {
	c := &http.Client{Transport: memTransport{}, Timeout: resilience.DefaultConfig().AttemptTimeout}
	b.ReportAllocs()
	for b.Loop() {
		doGet(b, c, "http://10.0.0.1:80/x")
	}
}

// BenchmarkResilienceChassis is the chain the budget of ARCHITECTURE §10 names: balancer,
// per-instance and dependency breakers, retry with its budget, and metrics; no timeouts.
func BenchmarkResilienceChassis(b *testing.B) {
	cfg := resilience.DefaultConfig()
	cfg.Timeout, cfg.AttemptTimeout, cfg.PropagateDeadline = 0, 0, false
	benchChassisClient(b, cfg)
}

// BenchmarkResilienceChassisDefaults is the chain with every default on: also the per-attempt
// timeout (a context timer per attempt) and the deadline header (a header map per attempt).
func BenchmarkResilienceChassisDefaults(b *testing.B) {
	benchChassisClient(b, resilience.DefaultConfig())
}

func benchChassisClient(b *testing.B, cfg resilience.Config) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer mp.Shutdown(context.Background())
	dep, err := resilience.NewDependency("pricing", cfg, resilience.WithMeterProvider(mp))
	if err != nil {
		b.Fatal(err)
	}
	bal, err := lb.NewFixed("pricing", []discovery.Instance{
		{ID: "a", Address: "10.0.0.1", Port: 80}, {ID: "b", Address: "10.0.0.2", Port: 80}, {ID: "c", Address: "10.0.0.3", Port: 80},
	}, lb.WithBaseTransport(memTransport{}), lb.WithMeterProvider(mp),
		lb.WithInstancePolicy(dep))
	if err != nil {
		b.Fatal(err)
	}
	defer bal.Close()
	c := &http.Client{Transport: dep.Wrap(lb.NewTransport(bal))}
	b.ReportAllocs()
	for b.Loop() {
		doGet(b, c, "http://pricing/x")
	}
}

func BenchmarkResilienceGoKitGobreaker(b *testing.B) {
	hc := &http.Client{Transport: memTransport{}}
	var eps []endpoint.Endpoint
	for _, host := range []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"} {
		cb := gobreaker.NewCircuitBreaker[*http.Response](gobreaker.Settings{Name: host})
		url := "http://" + host + "/x"
		eps = append(eps, func(ctx context.Context, _ any) (any, error) {
			return cb.Execute(func() (*http.Response, error) {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if err != nil {
					return nil, err
				}
				return hc.Do(req)
			})
		})
	}
	retry := kitlb.Retry(3, 10*time.Second, kitlb.NewRoundRobin(sd.FixedEndpointer(eps)))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := retry(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		r := resp.(*http.Response)
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
}

func BenchmarkResilienceFailsafe(b *testing.B) {
	hc := &http.Client{Transport: memTransport{}}
	rp := retrypolicy.NewBuilder[*http.Response]().WithMaxRetries(2).WithBackoff(25*time.Millisecond, time.Second).
		HandleIf(func(r *http.Response, err error) bool { return err != nil || r.StatusCode >= 500 }).Build()
	cb := circuitbreaker.NewBuilder[*http.Response]().WithFailureThreshold(5).WithDelay(5 * time.Second).Build()
	exec := failsafe.With[*http.Response](rp, cb)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := exec.Get(func() (*http.Response, error) { return hc.Get("http://10.0.0.1:80/x") })
		if err != nil && !errors.Is(err, circuitbreaker.ErrOpen) {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
