package prometheus_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/chassistest"
)

// TestSLORulesOnRealMetrics feeds the SLO recording rules what a real Chassis service exposes on
// /metrics, not hand-written series: it serves batches of requests (90 answered 200 at once, 10
// answered 500, 5 answered 200 after 0.6 s), scrapes /metrics after each batch, turns the scrapes
// into a promtool test (one scrape per minute, with the service label a scrape configuration adds),
// and expects the error ratio 10/105 and the share slower than the default 0.5 s threshold 5/105.
// This pins the metric and label names, the le spelling of the threshold bucket and the 5xx
// selector to what the exporter really writes.
func TestSLORulesOnRealMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("serves 15 slow requests and runs promtool; skipped with -short")
	}
	bin := promtool(t)
	in := chassistest.Start(t, "hello", func(svc *chassis.Service) error {
		svc.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		svc.HandleFunc("GET /fail", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusInternalServerError) })
		svc.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(600 * time.Millisecond)
			io.WriteString(w, "slow")
		})
		return nil
	}, chassistest.WithEnv(map[string]string{"SHED_ENABLED": "false", "HTTP_REQUEST_TIMEOUT": "5s"}))

	get := func(path string) {
		resp, err := http.Get("http://" + in.Addr() + path)
		if err != nil {
			t.Error(err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	const batches = 4
	var scrapes []map[string]string // series -> value
	for range batches {
		var wg sync.WaitGroup
		for range 5 {
			wg.Go(func() { get("/slow") })
		}
		for range 90 {
			get("/ok")
		}
		for range 10 {
			get("/fail")
		}
		wg.Wait()
		scrapes = append(scrapes, scrape(t, in.AdminURL("/metrics"), "http_server_request_duration_seconds_"))
	}

	// One input series per scraped series, sample i at minute i.
	var keys []string
	for k := range scrapes[len(scrapes)-1] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) < 10 {
		t.Fatalf("scraped %d http_server_request_duration_seconds series: %v", len(keys), keys)
	}
	var b strings.Builder
	abs := func(f string) string { p, _ := filepath.Abs(f); return p }
	fmt.Fprintf(&b, "rule_files: [%q, %q]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n",
		abs("slo-objectives-rules.yml"), abs("slo-rules.yml"))
	for _, k := range keys {
		var vals []string
		for _, s := range scrapes {
			v, ok := s[k]
			if !ok {
				v = "_"
			}
			vals = append(vals, v)
		}
		// The scrape configuration's target label; the exporter's own labels as they are.
		series := strings.Replace(k, "{", `{service="hello",`, 1)
		fmt.Fprintf(&b, "      - series: '%s'\n        values: '%s'\n", series, strings.Join(vals, " "))
	}
	fmt.Fprintf(&b, `    promql_expr_test:
      - expr: round(chassis:slo_availability_errors:ratio_rate5m, 0.0001)
        eval_time: %[1]dm
        exp_samples:
          - labels: '{service="hello"}'
            value: %.4[2]f
      - expr: round(chassis:slo_latency_slow:ratio_rate5m, 0.0001)
        eval_time: %[1]dm
        exp_samples:
          - labels: '{service="hello"}'
            value: %.4[3]f
      - expr: round(chassis:slo_availability:burnrate5m, 0.1)
        eval_time: %[1]dm
        exp_samples:
          - labels: '{service="hello"}'
            value: %.1[4]f
`, batches-1, 10.0/105, 5.0/105, 10.0/105/0.001)
	file := filepath.Join(t.TempDir(), "real_test.yml")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "test", "rules", file).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules on the scraped series: %v\n%s\ntest file:\n%s", err, out, b.String())
	}
}

// scrape reads the Prometheus text exposition at url and returns the value of every sample whose
// name starts with prefix, keyed by the series (name and labels, as exposed).
func scrape(t *testing.T, url, prefix string) map[string]string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sample := regexp.MustCompile(`^(\S+\{.*\}) (\S+)$`)
	out := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		m := sample.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unexpected sample line %q", line)
		}
		out[m[1]] = m[2]
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
