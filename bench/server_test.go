package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/telemetry"
)

// BenchmarkServerMiddleware measures the per-request cost of the default chassis route chain
// (telemetry span + RED metrics + access log decision, recovery, request id, body limit, deadline)
// against the bare handler, in process, with a recorder as the ResponseWriter. After each row it
// checks, from the spans exported, that the row's label is what ran.
//
//	cd bench && go test -run '^$' -bench ServerMiddleware -benchmem -count 6
func BenchmarkServerMiddleware(b *testing.B) {
	hello := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "hello")
	}
	run := func(b *testing.B, h http.Handler) {
		req := httptest.NewRequest("GET", "/hello/world", nil)
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatal(w.Code)
			}
		}
	}
	b.Run("bare", func(b *testing.B) {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /hello/{name}", hello)
		run(b, mux)
	})
	// The sampled rows record every sampled span and export it, through the batch span processor, to
	// an exporter that counts and discards it: the cost of tracing in production minus the network. Without a span exporter chassis records no span at all (a never-sample sampler keeps
	// trace ids for the logs), which is the "no-exporter" row: sampling settings make no difference
	// there.
	for _, tc := range []struct {
		name, sampler, arg string
		export             bool
		accessLog          string
	}{
		{"chassis/no-exporter", "always_on", "", false, "false"},
		{"chassis/access-log", "always_on", "", false, "true"}, // the default: one JSON line per request
		{"chassis/unsampled", "always_off", "", true, "false"},
		{"chassis/sampled-1pct", "parentbased_traceidratio", "0.01", true, "false"},
		{"chassis/sampled", "always_on", "", true, "false"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			env := map[string]string{"PORT": "0", "ADMIN_PORT": "0", "ACCESS_LOG": tc.accessLog,
				"OTEL_TRACES_SAMPLER": tc.sampler, "OTEL_TRACES_SAMPLER_ARG": tc.arg, "OTEL_TRACES_EXPORTER": "none"}
			if tc.arg == "" {
				delete(env, "OTEL_TRACES_SAMPLER_ARG")
			}
			svc, exp := benchService(b, env, tc.export)
			svc.HandleFunc("GET /hello/{name}", hello)
			run(b, svc.Handler())
			b.StopTimer()
			if err := svc.Telemetry().Shutdown(context.Background()); err != nil { // flushes the batch
				b.Fatal(err)
			}
			// The labels must say what ran: the sampled row exported every request's span, the others
			// (almost) none.
			if got := exp.spans.Load(); tc.sampler == "always_on" && tc.export && got < int64(b.N) ||
				!tc.export && got != 0 || tc.sampler == "always_off" && got != 0 {
				b.Fatalf("%d spans exported for %d requests", got, b.N)
			}
		})
	}
}

// benchService is a chassis service configured by env, logging nowhere, whose spans go to the
// returned exporter when export is set.
func benchService(b *testing.B, env map[string]string, export bool) (*chassis.Service, *countingExporter) {
	b.Helper()
	opts := []chassis.Option{chassis.WithEnv(config.MapLookup(env)), chassis.WithLogOutput(io.Discard)}
	exp := &countingExporter{}
	if export {
		opts = append(opts, chassis.WithTelemetryOptions(telemetry.WithSpanExporter(exp)))
	}
	svc, err := chassis.New("bench", opts...)
	if err != nil {
		b.Fatal(err)
	}
	return svc, exp
}

// countingExporter discards spans after counting them.
type countingExporter struct{ spans atomic.Int64 }

func (e *countingExporter) ExportSpans(_ context.Context, s []sdktrace.ReadOnlySpan) error {
	e.spans.Add(int64(len(s)))
	return nil
}
func (e *countingExporter) Shutdown(context.Context) error { return nil }

// BenchmarkStartToReady measures process start to the first 200 from /readyz for examples/hello,
// polling every millisecond. The binary is built once, outside the timing.
//
//	cd bench && go test -run '^$' -bench StartToReady -count 6
func BenchmarkStartToReady(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "hello")
	if out, err := exec.Command("go", "build", "-o", bin, "../examples/hello").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	client := &http.Client{Timeout: time.Second}
	var total time.Duration
	for b.Loop() {
		admin, public := freePort(b), freePort(b)
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "HOST=127.0.0.1", "PORT="+strconv.Itoa(public), "ADMIN_PORT="+strconv.Itoa(admin),
			"DRAIN_DELAY=0s", "LOG_LEVEL=warn")
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		url := fmt.Sprintf("http://127.0.0.1:%d/readyz", admin)
		for {
			res, err := client.Get(url)
			if err == nil {
				res.Body.Close()
				if res.StatusCode == 200 {
					break
				}
			}
			if time.Since(t0) > 10*time.Second {
				b.Fatal("not ready in 10s")
			}
			time.Sleep(time.Millisecond)
		}
		total += time.Since(t0)
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/ready")
}

func freePort(b *testing.B) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
