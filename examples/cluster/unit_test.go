package main

import (
	"bufio"
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHistogram(t *testing.T) {
	var h histogram
	if h.quantile(0.99) != 0 {
		t.Error("empty histogram has a quantile")
	}
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {0.999, 999 * time.Millisecond}, {1, time.Second}} {
		got := h.quantile(c.q)
		// Buckets are 2% wide: the quantile is the bucket's upper bound, capped by the maximum.
		if got < c.want || float64(got) > float64(c.want)*1.021 {
			t.Errorf("q%.3f = %v, want %v within +2%%", c.q, got, c.want)
		}
	}
	var tiny histogram
	tiny.add(0)
	tiny.add(time.Hour)
	if tiny.quantile(1) != time.Hour || tiny.quantile(0.5) > histMin {
		t.Errorf("extremes: q1 %v q0.5 %v", tiny.quantile(1), tiny.quantile(0.5))
	}
}

const sampleMetrics = `# HELP http_server_request_duration_seconds Duration of HTTP server requests.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{http_response_status_code="200",http_route="/a",le="0.005"} 90
http_server_request_duration_seconds_bucket{http_response_status_code="200",http_route="/a",le="0.1"} 99
http_server_request_duration_seconds_bucket{http_response_status_code="200",http_route="/a",le="+Inf"} 100
http_server_request_duration_seconds_sum{http_response_status_code="200",http_route="/a"} 1
http_server_request_duration_seconds_count{http_response_status_code="200",http_route="/a"} 100
http_server_request_duration_seconds_bucket{http_response_status_code="502",http_route="/a",le="0.005"} 0
http_server_request_duration_seconds_bucket{http_response_status_code="502",http_route="/a",le="0.1"} 10
http_server_request_duration_seconds_bucket{http_response_status_code="502",http_route="/a",le="+Inf"} 10
http_server_request_duration_seconds_sum{http_response_status_code="502",http_route="/a"} 0.5
http_server_request_duration_seconds_count{http_response_status_code="502",http_route="/a"} 10
# TYPE chassis_breaker_state gauge
chassis_breaker_state{peer_service="pricing",chassis_breaker_instance="127.0.0.1:1",chassis_breaker_state="open"} 1
chassis_breaker_state{peer_service="pricing",chassis_breaker_instance="127.0.0.1:1",chassis_breaker_state="closed"} 0
chassis_breaker_state{peer_service="pricing",chassis_breaker_instance="127.0.0.1:2",chassis_breaker_state="closed"} 1
# TYPE chassis_lb_ejected gauge
chassis_lb_ejected{peer_service="pricing"} 1
# TYPE chassis_discovery_instances gauge
chassis_discovery_instances{peer_service="pricing"} 3
# TYPE process_memory_usage_bytes gauge
process_memory_usage_bytes 2.097152e+07
`

func TestParseMetrics(t *testing.T) {
	t0 := time.Now()
	prev, err := parseMetrics(strings.NewReader(strings.ReplaceAll(strings.ReplaceAll(sampleMetrics, "} 100\n", "} 0\n"), "} 10\n", "} 0\n")), t0)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := parseMetrics(strings.NewReader(sampleMetrics), t0.Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if cur.requests != 110 || cur.errors != 10 {
		t.Errorf("requests %v errors %v, want 110 and 10", cur.requests, cur.errors)
	}
	if len(cur.breakers) != 1 || cur.breakers[0] != (Breaker{Peer: "pricing", Instance: "127.0.0.1:1", State: "open"}) {
		t.Errorf("breakers %+v, want the one open", cur.breakers)
	}
	if pv := cur.peers["pricing"]; pv == nil || pv.Ejected != 1 || pv.Instances != 3 {
		t.Errorf("peer view %+v", pv)
	}
	s := &scraper{last: map[string][2]*scrape{"x": {prev, cur}}, errs: map[string]string{}}
	m := s.metrics("x")
	if math.Abs(m.RPS-55) > 0.1 || math.Abs(m.ErrorRate-10.0/110) > 0.001 || m.RSSMB != 20 {
		t.Errorf("metrics %+v", m)
	}
	// 110 requests: 90 under 5 ms, 109 under 100 ms: the p99 (rank 108.9) lies in (5ms, 100ms].
	if m.P99Ms <= 5 || m.P99Ms > 100 {
		t.Errorf("p99 %vms, want within the (5, 100] bucket", m.P99Ms)
	}
}

func TestBucketQuantile(t *testing.T) {
	cur := []bucket{{0.1, 50}, {1, 100}, {math.Inf(1), 100}}
	if got := bucketQuantile(0.5, cur, nil); math.Abs(got-0.1) > 1e-9 {
		t.Errorf("median %v, want 0.1", got)
	}
	if got := bucketQuantile(0.75, cur, nil); math.Abs(got-0.55) > 1e-9 {
		t.Errorf("q0.75 %v, want 0.55 (linear in the bucket)", got)
	}
	if got := bucketQuantile(0.99, cur, cur); got != 0 {
		t.Errorf("no new requests: %v, want 0", got)
	}
	if got := bucketQuantile(0.99, []bucket{{0.1, 0}, {math.Inf(1), 10}}, nil); got != 0.1 {
		t.Errorf("all in +Inf: %v, want the highest finite bound", got)
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add(sampleMetrics)
	f.Add("")
	f.Add("# TYPE x counter\nx 1\n")
	f.Add("http_server_request_duration_seconds_bucket{le=\"NaN\"} 1\n")
	f.Fuzz(func(t *testing.T, text string) {
		sc, err := parseMetrics(strings.NewReader(text), time.Now())
		if err != nil {
			return
		}
		for i := 1; i < len(sc.buckets); i++ {
			if sc.buckets[i-1].le > sc.buckets[i].le {
				t.Fatalf("buckets out of order: %+v", sc.buckets)
			}
		}
		_ = bucketQuantile(0.99, sc.buckets, nil)
	})
}

func TestStats(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	s := newStats(base)
	s.record(outcome{at: base, op: opProduct, status: 200, idempotent: true, latency: time.Millisecond, attempts: 1, servedBy: []string{"gateway-1", "pricing-2"}})
	s.record(outcome{at: base.Add(time.Second), op: opProduct, status: 502, idempotent: true, latency: 2 * time.Millisecond, attempts: 3})
	s.record(outcome{at: base.Add(time.Second), op: opCartAdd, err: "connection reset", latency: time.Millisecond, attempts: 1})
	tot := s.totals()
	if tot.Requests != 3 || tot.OK != 1 || tot.Idempotent != 2 || tot.IdempotentOK != 1 || tot.Retried != 1 || tot.Attempts != 5 {
		t.Errorf("totals %+v", tot)
	}
	if tot.ByStatus["200"] != 1 || tot.ByStatus["502"] != 1 || tot.ByStatus["error"] != 1 || len(tot.ErrorSamples) != 2 {
		t.Errorf("by status %v, samples %v", tot.ByStatus, tot.ErrorSamples)
	}
	if tot.Share["pricing"]["pricing-2"] != 1 || tot.Share["gateway"]["gateway-1"] != 1 {
		t.Errorf("share %v", tot.Share)
	}
	if n, f := s.between(base.Add(time.Second), base.Add(time.Second)); n != 2 || f != 2 {
		t.Errorf("between: %d requests, %d failures, want 2 and 2", n, f)
	}
	if last := s.lastFailure(base, base.Add(5*time.Second)); !last.Equal(base.Add(2 * time.Second)) {
		t.Errorf("last failure %v", last)
	}
	if w := s.window(10); len(w) != 2 || w[1].Errors != 2 || w[0].P50Ms <= 0 {
		t.Errorf("window %+v", w)
	}
	if sh := s.takeShare(); sh["pricing"]["pricing-2"] != 1 || len(s.takeShare()) != 0 {
		t.Errorf("takeShare %v", sh)
	}
}

func TestShareBetween(t *testing.T) {
	base := time.Unix(1_700_000_000, 0)
	s := newStats(base)
	// Second 0: pricing-1 twice, pricing-2 once; second 1: pricing-2 three times; second 2: pricing-1.
	for _, r := range []struct {
		at   time.Duration
		inst string
	}{{0, "pricing-1"}, {100 * time.Millisecond, "pricing-1"}, {200 * time.Millisecond, "pricing-2"},
		{time.Second, "pricing-2"}, {1500 * time.Millisecond, "pricing-2"}, {1900 * time.Millisecond, "pricing-2"},
		{2 * time.Second, "pricing-1"}} {
		s.record(outcome{at: base.Add(r.at), status: 200, attempts: 1, servedBy: []string{"gateway-1", r.inst}})
	}
	cases := []struct {
		from, to time.Duration
		id       string
		want     shareCount
	}{
		{0, 3 * time.Second, "pricing-2", shareCount{4, 7}},
		{0, time.Second, "pricing-1", shareCount{2, 3}},
		{500 * time.Millisecond, 3 * time.Second, "pricing-2", shareCount{3, 4}},         // second 0 straddles from
		{0, 1500 * time.Millisecond, "pricing-2", shareCount{1, 3}},                      // second 1 straddles to
		{500 * time.Millisecond, 1500 * time.Millisecond, "pricing-2", shareCount{0, 0}}, // no whole second
	}
	for _, c := range cases {
		if got := s.shareBetween("pricing", c.id, base.Add(c.from), base.Add(c.to)); got != c.want {
			t.Errorf("shareBetween(%s, %v, %v) = %+v, want %+v", c.id, c.from, c.to, got, c.want)
		}
	}
	if got := s.shareBetween("gateway", "gateway-1", base, base.Add(3*time.Second)); got != (shareCount{7, 7}) {
		t.Errorf("gateway share %+v", got)
	}
}

// TestSteeringSaysSoOnlyWhenTrue: the slow event's text reports the measured shares and claims the
// balancers steered around the instance only when its share while slow at most halved.
func TestSteeringSaysSoOnlyWhenTrue(t *testing.T) {
	const fair = 1.0 / 3
	cases := []struct {
		name                  string
		before, during, after shareCount
		want                  string
		claim                 bool
	}{
		{"steered", shareCount{100, 300}, shareCount{10, 300}, shareCount{90, 270}, "33% of 300 in the 5s before, 3% of 300 while slow, 33% of 270 in the 3s after", true},
		{"not steered", shareCount{100, 300}, shareCount{90, 300}, shareCount{100, 300}, "30% of 300 while slow", false},
		{"just over half", shareCount{100, 300}, shareCount{51, 300}, shareCount{}, "more than half its share before", false},
		{"exactly half", shareCount{100, 300}, shareCount{50, 300}, shareCount{}, "17% of 300 while slow", true},
		{"no calls before: fair share", shareCount{0, 0}, shareCount{10, 300}, shareCount{}, "n/a (0 calls) in the 5s before", true},
		{"no calls before, not steered", shareCount{0, 5}, shareCount{100, 300}, shareCount{}, "more than half its fair share", false},
		{"too few while slow", shareCount{100, 300}, shareCount{0, 10}, shareCount{}, "too few calls while slow", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := steering("pricing-2", fair, c.before, c.during, c.after)
			if !strings.Contains(got, c.want) {
				t.Errorf("%q\ndoes not contain %q", got, c.want)
			}
			if claim := strings.HasSuffix(got, ": the balancers steered around it"); claim != c.claim {
				t.Errorf("claims steering = %v, want %v: %q", claim, c.claim, got)
			}
			if !strings.Contains(got, "fair share 33%") {
				t.Errorf("no fair share: %q", got)
			}
		})
	}
}

func TestServiceOf(t *testing.T) {
	for in, want := range map[string]string{"pricing-2": "pricing", "gateway-12": "gateway", "x": "x", "a-b-3": "a-b"} {
		if got := serviceOf(in); got != want {
			t.Errorf("serviceOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil || o.duration != time.Minute || o.instances != 3 || !o.chaos || o.dashboard != "127.0.0.1:8088" || o.seed == 0 {
		t.Errorf("defaults %+v, %v", o, err)
	}
	_, err = parseFlags([]string{"-rate", "0", "-instances", "0", "-consul", "remote", "-duration", "-1s", "extra"}, io.Discard)
	if err == nil {
		t.Fatal("bad flags accepted")
	}
	for _, want := range []string{"-rate", "-instances", "-consul", "-duration", "unexpected arguments"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if o, err := parseFlags([]string{"-registry=etcd"}, io.Discard); err != nil || o.registry != "etcd" {
		t.Errorf("-registry=etcd: %+v, %v", o.registry, err)
	}
	for _, bad := range [][]string{{"-registry=zookeeper"}, {"-registry=etcd", "-consul=local"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil || !strings.Contains(err.Error(), "-registry") {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

// The proxy in front of a real Consul cuts every connection on SetDown(true), refuses new ones, and
// serves again on the same address after SetDown(false).
func TestProxyOutage(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer backend.Close()
	p, err := newProxy(backend.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func() error {
		res, err := client.Get("http://" + p.Addr() + "/")
		if err != nil {
			return err
		}
		defer res.Body.Close()
		_, err = io.ReadAll(res.Body)
		return err
	}
	if err := get(); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	// A held connection is cut by the outage. One keep-alive exchange over it first: its answer is
	// the signal that the proxy has dialled the backend and tracks the pair.
	held, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	_ = held.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(held, "GET / HTTP/1.1\r\nHost: backend\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(held), nil)
	if err != nil || res.StatusCode != http.StatusOK || res.Close {
		t.Fatalf("keep-alive exchange over the held connection: %v %v", res, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	addr := p.Addr()
	if err := p.SetDown(true); err != nil {
		t.Fatal(err)
	}
	_ = held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := held.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Errorf("held connection still open after the outage began: %v", err)
	}
	if err := get(); err == nil {
		t.Error("request succeeded during the outage")
	}
	if err := p.SetDown(false); err != nil {
		t.Fatal(err)
	}
	if p.Addr() != addr {
		t.Errorf("address changed across the outage: %s -> %s", addr, p.Addr())
	}
	if err := get(); err != nil {
		t.Errorf("after the outage: %v", err)
	}
}

func TestEmbeddedRegistryOutage(t *testing.T) {
	r, err := startEmbedded()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := newRegistryWatcher(r)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w.poll(ctx)
	if v := w.get(); !v.Reachable {
		t.Fatalf("view %+v", v)
	}
	if err := r.Outage(true); err != nil {
		t.Fatal(err)
	}
	w.poll(ctx)
	if v := w.get(); v.Reachable || v.Error == "" {
		t.Errorf("during the outage: %+v", v)
	}
	if err := r.Outage(false); err != nil {
		t.Fatal(err)
	}
	w.poll(ctx)
	if v := w.get(); !v.Reachable {
		t.Errorf("after the outage: %+v", v)
	}
}

// The summary as the terminal shows it.
func Example() {
	printSummary(os.Stdout, Summary{
		Registry: "embedded fake Consul", Duration: 30, RateTarget: 100, Seed: 7,
		Totals: Totals{Requests: 3000, OK: 2999, SuccessRate: 2999.0 / 3000, Idempotent: 2500, IdempotentOK: 2500, IdempotentRate: 1,
			P50Ms: 2.5, P99Ms: 40, P999Ms: 120, MaxMs: 300, ByStatus: map[string]int{"200": 2999, "502": 1},
			ByOp: map[string]opStats{opCartAdd: {Requests: 500, OK: 499}},
			Failures: []Failure{{failureKey: failureKey{Status: "502", Route: opCartAdd, Instance: "gateway-1", Reason: reasonUpstream},
				Count: 1, Detail: "pricing: connection refused", First: 4.6, Last: 4.6}}},
		Events:   []Event{{Offset: 4.5, Kind: EventKill, Detail: "SIGKILL pricing-2", Reaction: "500 requests, 1 failed"}},
		Shutdown: Shutdown{Stopped: 12, Seconds: 1.5},
	})
	// Output:
	// == Summary (embedded fake Consul, 30s at 100 req/s, seed 7)
	// requests     3000, 2999 ok: 99.967%
	// idempotent   2500, 2500 ok: 100.000%   (GETs; the client retries them)
	// latency      p50 2.5ms  p99 40.0ms  p99.9 120.0ms  max 300.0ms
	// retried      0 requests needed more than one attempt (0 attempts in all)
	// degraded     0 answers without a price (pricing slow or failing; the gateway's fallback)
	// statuses     200×2999  502×1
	//   POST /cart/{user}/items     500 requests, 99.800% ok
	// events:
	//      4.5s kill             SIGKILL pricing-2
	//                            500 requests, 1 failed
	// shutdown     12 instances stopped in 1.5s, 0 needed SIGKILL; every child reaped
	// failures     1, in 1 groups (status, route, instance that answered, reason):
	//   1× POST /cart/{user}/items 502 from gateway-1: upstream error, at 4.6s (pricing: connection refused)
}

func TestChromiumBinary(t *testing.T) {
	onPath := func(names ...string) func(string) (string, error) {
		return func(n string) (string, error) {
			for _, m := range names {
				if filepath.Base(n) == m {
					if filepath.IsAbs(n) {
						return n, nil
					}
					return "/opt/bin/" + n, nil
				}
			}
			return "", exec.ErrNotFound
		}
	}
	noEnv := func(string) string { return "" }
	cases := []struct {
		name   string
		getenv func(string) string
		look   func(string) (string, error)
		want   string
	}{
		{"debian chromium", noEnv, onPath("chromium"), "/opt/bin/chromium"},
		{"ubuntu chromium-browser", noEnv, onPath("chromium-browser"), "/opt/bin/chromium-browser"},
		{"chrome", noEnv, onPath("google-chrome"), "/opt/bin/google-chrome"},
		{"chromium first", noEnv, onPath("google-chrome", "chromium"), "/opt/bin/chromium"},
		{"CHROMIUM wins", func(k string) string { return map[string]string{"CHROMIUM": "/x/headless_shell"}[k] },
			onPath("chromium", "headless_shell"), "/x/headless_shell"},
	}
	for _, c := range cases {
		got, err := chromiumBinary(c.getenv, c.look)
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	if _, err := chromiumBinary(noEnv, onPath()); err == nil || !strings.Contains(err.Error(), "install-chromium.sh") {
		t.Errorf("nothing on PATH: %v", err)
	}
	if _, err := chromiumBinary(func(string) string { return "nope" }, onPath("chromium")); err == nil || !strings.Contains(err.Error(), "CHROMIUM") {
		t.Errorf("CHROMIUM not found: %v", err)
	}
}

func TestClassifyFailures(t *testing.T) {
	cases := []struct {
		o    outcome
		want string
	}{
		{outcome{status: 503, detail: "server overloaded (limit: 120 in flight, limit 100); retry in 1 s"}, reasonShed},
		{outcome{status: 503, detail: "draining"}, reasonUnavailable},
		{outcome{status: 429, detail: "rate limit exceeded"}, reasonRateLimited},
		{outcome{status: 504, detail: "pricing did not answer in time"}, reasonTimeout},
		{outcome{status: 502, detail: "cart: connection refused"}, reasonUpstream},
		{outcome{status: 500}, reasonServerError},
		{outcome{status: 409}, reasonClientError},
		{outcome{err: "Post \"http://gateway/cart\": dial tcp 127.0.0.1:1: connect: connection refused"}, reasonRefused},
		{outcome{err: "context deadline exceeded"}, reasonTimeout},
		{outcome{err: "read tcp: connection reset by peer"}, reasonConnLost},
		{outcome{err: "lb: no instances available"}, reasonNoInstance},
		{outcome{err: "load generator saturated (too many requests in flight)"}, reasonSaturated},
		{outcome{err: "something else"}, reasonTransport},
	}
	for _, c := range cases {
		if got := classify(c.o); got != c.want {
			t.Errorf("classify(%+v) = %q, want %q", c.o, got, c.want)
		}
	}
}

// TestFailuresExplainEveryFailure checks that the totals group every failed request by status,
// route, instance and reason, that the per-second groups give an event's window, and that the
// printed summary names them.
func TestFailuresExplainEveryFailure(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	st := newStats(start)
	shed := "server overloaded (limit: 101 in flight, limit 100); retry in 1 s"
	for i := range 100 {
		o := outcome{at: start.Add(time.Duration(i) * 100 * time.Millisecond), status: 200, op: opProduct, idempotent: true}
		switch {
		case i%10 == 3:
			o.op, o.status, o.detail, o.instance, o.idempotent = opCartAdd, 503, shed, "gateway-2", false
		case i == 55:
			o.status, o.err = 0, "dial tcp 127.0.0.1:9: connect: connection refused"
		}
		st.record(o)
	}
	tot := st.totals()
	sum := 0
	for _, f := range tot.Failures {
		sum += f.Count
	}
	if failed := tot.Requests - tot.OK; sum != failed || failed != 11 {
		t.Fatalf("failures %+v explain %d of %d", tot.Failures, sum, failed)
	}
	top := tot.Failures[0]
	if top.Count != 10 || top.Status != "503" || top.Route != opCartAdd || top.Instance != "gateway-2" || top.Reason != reasonShed ||
		top.First != 0.3 || top.Last != 9.3 || top.Detail != shed {
		t.Errorf("first group %+v", top)
	}
	win := st.failuresBetween(start.Add(5*time.Second), start.Add(5*time.Second))
	if len(win) != 2 || win[0].Count != 1 || win[1].Count != 1 {
		t.Errorf("failures in second 5: %+v, want the shed POST and the refused GET", win)
	}
	if got := reaction(10, 2, 0.4, win, ""); !strings.Contains(got, "1× GET /products/{id} no response: connection refused") ||
		!strings.Contains(got, "1× POST /cart/{user}/items 503 from gateway-2: shed") {
		t.Errorf("reaction %q does not say why the requests failed", got)
	}
	var b strings.Builder
	printFailures(&b, tot)
	if out := b.String(); !strings.Contains(out, "failures     11, in 2 groups") || !strings.Contains(out, "10× POST /cart/{user}/items 503 from gateway-2: shed, 0.3s–9.3s") {
		t.Errorf("summary:\n%s", out)
	}
}

// TestTimelineSetupOffsets checks that events before the load's start do not get an offset from a
// zero time (which saturates at 9223372036.9 s) and get a negative one once the load starts.
func TestTimelineSetupOffsets(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	tl := &timeline{}
	tl.add(Event{At: start.Add(-1500 * time.Millisecond), Kind: EventStart})
	if e := tl.list()[0]; !e.Setup || e.Offset != 0 {
		t.Fatalf("setup event before begin: %+v", e)
	}
	tl.begin(start)
	tl.add(Event{At: start.Add(2 * time.Second), Kind: EventKill})
	evs := tl.list()
	if !evs[0].Setup || evs[0].Offset != -1.5 || evs[1].Setup || evs[1].Offset != 2 {
		t.Errorf("offsets: %+v", evs)
	}
}

// TestInstanceViewDead checks that a killed or exited instance shows no share or metrics, however
// its last scrape and the last second's responses name it.
func TestInstanceViewDead(t *testing.T) {
	share := map[string]map[string]int{"cart": {"cart-1": 30, "cart-2": 70}}
	m := InstanceMetrics{RPS: 12, P99Ms: 3}
	for _, st := range []ProcState{StateKilled, StateExited} {
		v := instanceView(InstanceInfo{Service: "cart", ID: "cart-1", State: st}, m, share, RegistryView{})
		if v.Live || v.Share != 0 || v.RPS != 0 || v.P99Ms != 0 {
			t.Errorf("%s: %+v", st, v)
		}
	}
	v := instanceView(InstanceInfo{Service: "cart", ID: "cart-2", State: StateReady}, m, share, RegistryView{})
	if !v.Live || v.Share != 0.7 || v.RPS != 12 {
		t.Errorf("ready: %+v", v)
	}
}

// TestDashboardPortBusy checks that a busy dashboard port fails with a message that names -dashboard
// (the launcher listens before it builds, so this comes at once).
func TestDashboardPortBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := newDashboard(ln.Addr().String(), func() State { return State{} }, nil)
	if err == nil {
		_ = d.Close()
		t.Fatal("newDashboard on a busy port succeeded")
	}
	if !strings.Contains(err.Error(), "is in use") || !strings.Contains(err.Error(), "-dashboard 127.0.0.1:0") {
		t.Errorf("error %q does not say the port is busy and how to choose another", err)
	}
}
