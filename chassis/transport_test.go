package chassis_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/telemetry"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// 32 concurrent callers make a bounded number of calls to one instance over loopback. With the
// default transport the client opens about one connection per caller and reuses them: under 0.05
// new connections per request (http.DefaultTransport, which keeps 2 idle connections per host,
// opened 0.84). CLIENT_<NAME>_MAX_IDLE_CONNS=2 brings the churn back (more connections opened than
// there are callers, and at most 2 kept), which shows the setting works and the test can fail; how
// much churn depends on how many callers the scheduler runs at once, so no rate is asserted for it. The count comes from the client's chassis.client.connections.opened
// metric, checked against the connections the callee saw; chassis.client.connections.open against
// the idle limit.
func TestClientReusesConnections(t *testing.T) {
	ca, dir, caFile := newMesh(t, "mesh CA")
	server := ca.issue(t, "pricing").write(t, dir, "server")
	client := ca.issue(t, "spiffe://mesh.test/gateway").write(t, dir, "client")
	tlsEnv := []string{"CLIENT_TLS_ENABLED", "true", "CLIENT_TLS_CA_FILE", caFile,
		"CLIENT_TLS_CERT_FILE", client.cert, "CLIENT_TLS_KEY_FILE", client.key}

	const workers, perWorker = 32, 80
	for _, tc := range []struct {
		name    string
		tls     bool
		kv      []string
		atMost  float64 // new connections per request
		churn   bool    // more connections opened than there are callers
		maxOpen int64   // connections open at the end
	}{
		{name: "default", atMost: 0.05, maxOpen: 2 * workers},
		{name: "TLS", tls: true, kv: tlsEnv, atMost: 0.05, maxOpen: 2 * workers},
		{name: "2 idle connections per instance", kv: []string{"CLIENT_PRICING_MAX_IDLE_CONNS", "2"}, churn: true, atMost: 1, maxOpen: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu    sync.Mutex
				peers = map[string]bool{} // connections the callee saw, by remote address
			)
			kv := []string{"SHED_ENABLED", "false"}
			if tc.tls {
				kv = []string{"SHED_ENABLED", "false", "TLS_CERT_FILE", server.cert, "TLS_KEY_FILE", server.key, "TLS_CLIENT_CA_FILE", caFile}
			}
			callee, err := chassis.New("pricing", chassis.WithEnv(env(kv...)), chassis.WithoutSignals())
			if err != nil {
				t.Fatal(err)
			}
			callee.HandleFunc("GET /x", func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				peers[r.RemoteAddr] = true
				mu.Unlock()
				io.WriteString(w, "ok")
			})
			start(t, callee)

			reader := sdkmetric.NewManualReader()
			svc, err := chassis.New("gateway", chassis.WithoutSignals(),
				chassis.WithEnv(env(append([]string{"DISCOVERY_STATIC_PRICING", callee.Addr(),
					// Counts, not latency: no deadline but the test's, and every failure shows.
					"CLIENT_PRICING_TIMEOUT", "0", "CLIENT_PRICING_ATTEMPT_TIMEOUT", "0", "CLIENT_PRICING_RETRIES", "0",
					"CLIENT_PRICING_BREAKER_FAILURES", "0", "CLIENT_PRICING_DEPENDENCY_BREAKER_RATE", "0"}, tc.kv...)...)),
				chassis.WithTelemetryOptions(telemetry.WithMetricReader(reader), telemetry.WithoutRuntimeMetrics()))
			if err != nil {
				t.Fatal(err)
			}
			c := svc.Client("pricing")
			start(t, svc)

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var failed atomic.Int64
			var firstErr atomic.Value
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range perWorker {
						res, body, err := call(ctx, c, "http://pricing/x")
						if err == nil && (res.StatusCode != http.StatusOK || body != "ok") {
							err = fmt.Errorf("%d %q", res.StatusCode, body)
						}
						if err != nil {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
						}
					}
				})
			}
			wg.Wait()
			if n := failed.Load(); n > 0 {
				t.Fatalf("%d calls failed; first: %v", n, firstErr.Load())
			}

			scheme := "http"
			if tc.tls {
				scheme = "https"
			}
			opened := sumMetric(t, reader, semconv.MetricClientConnectionsOpened,
				attribute.String(semconv.AttrPeerService, "pricing"), attribute.String(semconv.AttrURLScheme, scheme))
			// Connections beyond the idle pool are closed by the transport's connection goroutines
			// after their call returned: wait (bounded) until those closes have been counted.
			var open int64
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				open = sumMetric(t, reader, semconv.MetricClientConnectionsOpen, attribute.String(semconv.AttrPeerService, "pricing"))
				if open <= tc.maxOpen || time.Now().After(deadline) {
					break
				}
			}
			mu.Lock()
			seen := len(peers)
			mu.Unlock()
			const requests = workers * perWorker
			ratio := float64(opened) / requests
			t.Logf("%d requests, %d concurrent: %d new connections (%.3f per request), %d open at the end; the callee saw %d",
				requests, workers, opened, ratio, open, seen)
			if ratio > tc.atMost {
				t.Errorf("%.3f new connections per request, want at most %.2f", ratio, tc.atMost)
			}
			if tc.churn && opened <= workers {
				t.Errorf("%d connections opened for %d callers, want more: connections beyond the idle limit are closed and dialled again", opened, workers)
			}
			// Some dialled connections are never used: a call waiting for its dial takes a
			// connection another call released first. The callee does not see those.
			if int64(seen) > opened {
				t.Errorf("the metric counts %d new connections, the callee saw %d", opened, seen)
			}
			if open < 1 || open > tc.maxOpen || open > opened {
				t.Errorf("%d connections open at the end (%d opened), want 1 to %d", open, opened, tc.maxOpen)
			}
		})
	}
}

// sumMetric adds up the data points of a counter or up-down counter whose attributes include want.
func sumMetric(t *testing.T, r *sdkmetric.ManualReader, name string, want ...attribute.KeyValue) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var total int64
	found := false
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			if sm.Scope.Name != semconv.ScopeChassis {
				t.Errorf("%s in scope %q", name, sm.Scope.Name)
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				t.Fatalf("%s is a %T", name, m.Data)
			}
		points:
			for _, dp := range sum.DataPoints {
				for _, kv := range want {
					if v, ok := dp.Attributes.Value(kv.Key); !ok || v != kv.Value {
						continue points
					}
				}
				found = true
				total += dp.Value
			}
		}
	}
	if !found {
		t.Fatalf("no %s data point with %v", name, want)
	}
	return total
}

// The connection metrics are on the service's /metrics under their Prometheus names.
func TestConnectionMetricsOnPrometheus(t *testing.T) {
	callee, err := chassis.New("pricing", chassis.WithEnv(env()), chassis.WithoutSignals())
	if err != nil {
		t.Fatal(err)
	}
	callee.HandleFunc("GET /x", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	start(t, callee)
	svc, err := chassis.New("gateway", chassis.WithEnv(env("DISCOVERY_STATIC_PRICING", callee.Addr())), chassis.WithoutSignals())
	if err != nil {
		t.Fatal(err)
	}
	c := svc.Client("pricing")
	start(t, svc)
	if _, _, err := call(context.Background(), c, "http://pricing/x"); err != nil {
		t.Fatal(err)
	}
	res, err := http.Get("http://" + svc.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`chassis_client_connections_opened_total{`,
		`chassis_client_connections_open{`,
	} {
		i := strings.Index(string(b), want)
		if i < 0 {
			t.Errorf("no %s on /metrics", want)
			continue
		}
		line := string(b[i:])
		line = line[:strings.IndexByte(line, '\n')]
		if !strings.Contains(line, `peer_service="pricing"`) || !strings.HasSuffix(line, " 1") {
			t.Errorf("%s: want peer_service=\"pricing\" and the value 1", line)
		}
	}
}
