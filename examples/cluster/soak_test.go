package main

import (
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSoak is the 60 s soak of make test: the cluster on a real Consul agent with the chaos
// schedule repeating every 30 s, sampled every 2 s. The launcher itself fails the run (exit 1) on
// unbounded growth, a failed idempotent request or an unanswered chaos event; the test also checks
// that the report judged every kind of process, the agent and each service, and wrote its file.
// make soak runs the 10-minute version. Needs the consul binary: scripts/install-consul.sh.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the cluster on a real Consul agent for 60 s; skipped with -short")
	}
	if _, err := findBinary("go", "consul"); err != nil {
		t.Fatal(err)
	}
	const duration = 60 * time.Second
	report := filepath.Join(t.TempDir(), "soak.md")
	l := startLauncher(t, "-soak", "-consul=local", "-duration", duration.String(), "-chaos-every", "30s",
		"-rate", "50", "-instances", "2", "-dashboard", "", "-seed", "5", "-soak-report", report)
	l.waitLine(t, reLoad, 3*time.Minute)
	s := l.wait(t, duration+2*time.Minute) // fails the test when the launcher exits non-zero
	r := s.Soak
	if r == nil {
		t.Fatal("summary has no soak report")
	}
	if !r.OK || len(r.Problems) > 0 {
		t.Errorf("soak failed: %v", r.Problems)
	}
	if r.IdempotentFailed != 0 || r.Idempotent < 1000 {
		t.Errorf("idempotent requests %d, failed %d", r.Idempotent, r.IdempotentFailed)
	}
	if r.ChaosEvents < 8 || len(r.Unanswered) > 0 { // two cycles of five, the last may be cut short
		t.Errorf("chaos events %d, unanswered %v", r.ChaosEvents, r.Unanswered)
	}
	judged := map[string]bool{}
	for _, c := range r.Checks {
		judged[c.Series+" "+c.Resource] = true
		if c.Samples < 3*minThird {
			t.Errorf("%s %s judged on %d samples", c.Series, c.Resource, c.Samples)
		}
	}
	for _, want := range []string{"consul agent goroutines", "consul agent rss_mib", "consul agent fds", "consul agent streams",
		"consul agent http_conns", "launcher (load generator) goroutines"} {
		if !judged[want] {
			t.Errorf("no check of %s", want)
		}
	}
	for _, svc := range services {
		for _, res := range []string{resGoroutines, resRSS, resFDs} {
			if k := svc + " (median of live instances) " + res; !judged[k] {
				t.Errorf("no check of %s", k)
			}
		}
	}
	for _, sr := range r.Series {
		if sr.Series == "consul agent" && sr.Resource == resConns && len(sr.Points) < 3*minThird {
			t.Errorf("agent connections: %d samples in the summary", len(sr.Points))
		}
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "## Soak: PASS") || !regexp.MustCompile(`(?m)^\| gateway \(median of live instances\) \| \d`).Match(b) {
		t.Errorf("report file:\n%s", b)
	}
	t.Logf("report:\n%s", b)
	assertNoOrphans(t, s)
}

func TestJudge(t *testing.T) {
	b := bound{rel: 0.25, abs: 10, ceiling: 500}
	flat := func(n int, f func(i int) float64) []point {
		var pts []point
		for i := range n {
			pts = append(pts, point{t: float64(i), v: f(i)})
		}
		return pts
	}
	for name, tc := range map[string]struct {
		pts    []point
		ok     bool
		judged bool
	}{
		// Spikes (a chaos event in a third) move a median little: not growth.
		"flat with spikes": {flat(30, func(i int) float64 { return 100 + 200*float64(i%7/6) }), true, true},
		// Warm-up samples (t < 5) are not judged, however low.
		"warm-up ignored": {flat(35, func(i int) float64 { return map[bool]float64{true: 10, false: 100}[i < 5] }), true, true},
		// Two goroutines a sample: a leak (the medians of the thirds are about 2×2/3×55 apart).
		"linear leak": {flat(60, func(i int) float64 { return 100 + 2*float64(i) }), false, true},
		// A level shift inside the tolerance (a pool that grew once).
		"bounded step": {flat(30, func(i int) float64 { return 100 + 20*float64(min(1, i/15)) }), true, true},
		"over ceiling": {flat(30, func(i int) float64 { return 100 + 500*float64(i/29) }), false, true},
		"too few":      {flat(12, func(i int) float64 { return 1 }), false, false},
	} {
		t.Run(name, func(t *testing.T) {
			c, judged := judge(tc.pts, 5, b)
			if judged != tc.judged || (judged && c.OK != tc.ok) {
				t.Errorf("judged %t ok %t (%s), want judged %t ok %t; %+v", judged, c.OK, c.Why, tc.judged, tc.ok, c)
			}
		})
	}
}

func TestEstablishedToBadAddress(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:not-a-port", "no port"} {
		if v := establishedTo(addr); !math.IsNaN(v) {
			t.Errorf("establishedTo(%q) = %v, want NaN", addr, v)
		}
	}
}

func TestSoakFlags(t *testing.T) {
	t.Setenv("CONSUL_HTTP_ADDR", "")
	_, err := parseFlags([]string{"-soak", "-duration", "0"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-soak needs a -duration") || !strings.Contains(err.Error(), "-soak needs a real Consul agent") {
		t.Errorf("-soak without duration and agent: %v", err)
	}
	o, err := parseFlags([]string{"-soak", "-consul=local", "-duration", "10m"}, io.Discard)
	if err != nil || o.soak.warmup != time.Minute || o.chaosEvery != time.Minute {
		t.Errorf("-soak defaults: warm-up %s, chaos every %s, %v; want 1m and 1m", o.soak.warmup, o.chaosEvery, err)
	}
	if _, err := parseFlags([]string{"-soak", "-consul=local", "-duration", "10s"}, io.Discard); err == nil || !strings.Contains(err.Error(), "too few samples") {
		t.Errorf("-soak of 10s: %v", err)
	}
}
