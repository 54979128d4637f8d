package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// pageFixture is a dashboard served in this process from a state the test controls, built with the
// launcher's own parts (timeline, stats, instanceView), so that the page is tested without a cluster.
type pageFixture struct {
	mu    sync.Mutex
	state State
}

func (f *pageFixture) get() State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

func (f *pageFixture) set(s State) {
	f.mu.Lock()
	f.state = s
	f.mu.Unlock()
}

// fixtureState is a running demo 40 s into its load: the setup's start events (added before the
// load's start, as the launcher does), a kill, a slowdown that lasted 6 s, and catalog-2 killed,
// whose last scrape and last second still name it; staleDead also marks catalog-1 exited.
func fixtureState(t *testing.T, start time.Time, staleDead bool) State {
	t.Helper()
	tl := &timeline{}
	for _, id := range []string{"catalog-1", "catalog-2", "catalog-3", "gateway-1"} {
		tl.add(Event{At: start.Add(-2 * time.Second), Kind: EventStart, Target: id, Detail: id + " ready"})
	}
	tl.begin(start)
	tl.add(Event{At: start.Add(12 * time.Second), Kind: EventKill, Target: "catalog-2", Chaos: true, Detail: "SIGKILL catalog-2"})
	slow := tl.add(Event{At: start.Add(20 * time.Second), Kind: EventSlow, Target: "pricing-1", Chaos: true, Detail: "pricing-1 answers 150ms slower"})
	tl.finish(slow, func(e *Event) { e.Duration, e.Requests, e.Reaction = 6, 600, "600 requests, 0 failed (100.00% ok)" })

	st := newStats(start)
	for sec := range 40 {
		for i := range 50 {
			o := outcome{at: start.Add(time.Duration(sec)*time.Second + time.Duration(i)*20*time.Millisecond),
				latency: 3 * time.Millisecond, status: 200, op: opProduct, idempotent: true, servedBy: []string{"gateway-1", "catalog-1"}}
			if sec == 12 && i < 2 {
				o.status, o.detail, o.instance = 503, "server overloaded (limit: 100 in flight, limit 100); retry in 1 s", "gateway-1"
			}
			st.record(o)
		}
	}
	stale := InstanceMetrics{RPS: 33, P99Ms: 4, ErrorRate: 0.01, RSSMB: 20}
	share := map[string]map[string]int{"catalog": {"catalog-1": 60, "catalog-2": 40}}
	reg := RegistryView{Kind: "embedded fake Consul", Addr: "127.0.0.1:1", Reachable: true}
	infos := []InstanceInfo{
		{Service: "catalog", ID: "catalog-1", State: StateReady, Pid: 101, Addr: "127.0.0.1:2"},
		{Service: "catalog", ID: "catalog-2", State: StateKilled, Pid: 102, Addr: "127.0.0.1:3"},
		{Service: "gateway", ID: "gateway-1", State: StateReady, Pid: 103, Addr: "127.0.0.1:4"},
	}
	if staleDead {
		infos[0].State = StateExited
	}
	s := State{Now: start.Add(40 * time.Second), Elapsed: 40, Duration: 60, Chaos: true, Phase: "running",
		LoadStart: start.UnixMilli(), Registry: reg, Services: services, Events: tl.list(),
		Load: LoadView{Rate: 50, Totals: st.totals(), Series: st.window(120)}}
	for _, in := range infos {
		s.Instances = append(s.Instances, instanceView(in, stale, share, reg))
	}
	return s
}

// TestDashboardPage checks the dashboard in headless Chromium against a state the test controls:
//   - the first paint, with the event stream blocked, already shows the cluster (no empty page);
//   - the setup's events show "setup", not an overflowed 9223372036.9 s, and no time overlaps its label;
//   - the traffic chart has a time axis in seconds since the load started and a mark per chaos event;
//   - the chaos timeline is above the fold of a 1280×900 window;
//   - a killed or exited instance shows no share, also when the last second and its last scrape
//     still name it, on the first paint and after a live update.
func TestDashboardPage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts headless Chromium; skipped with -short")
	}
	start := time.Unix(1_700_000_000, 0)
	f := &pageFixture{}
	f.set(fixtureState(t, start, false))
	d, err := newDashboard("127.0.0.1:0", f.get, func(string, string) error { return errors.New("no cluster in this test") })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openBrowser(t, "about:blank")
	// No server-sent event reaches the page: what it shows is its first paint.
	if err := b.call("Network.enable", map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.call("Network.setBlockedURLs", map[string]any{"urls": []string{"*/api/events*"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.call("Page.navigate", map[string]any{"url": d.URL()}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.waitFor(ctx, `document.readyState === "complete" && !!document.querySelector("#chart")`, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	var status string
	if err := b.eval(`document.querySelector("#status").textContent`, &status); err != nil || status == "live" {
		t.Fatalf("status %q (%v): the event stream should be blocked in this part", status, err)
	}
	checkFirstPaint(t, b)
	checkEventTimes(t, b)
	checkChart(t, b)
	checkDeadShare(t, b, "catalog-2")
	var above bool
	if err := b.eval(`document.querySelector("#events").getBoundingClientRect().top < innerHeight - 150`, &above); err != nil || !above {
		t.Errorf("the chaos timeline is below the fold (%v)", err)
	}
	if err := b.eval(`document.querySelector('.inst[data-instance="catalog-1"] .share').textContent`, &status); err != nil || status != "share60%" {
		t.Errorf("catalog-1's share shows %q (%v), want share60%%", status, err)
	}
	shot(t, b, "dashboard-first-paint.png")

	// Live: the stream connects, and an update that marks catalog-1 exited takes its share away.
	if err := b.call("Network.setBlockedURLs", map[string]any{"urls": []string{}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.call("Page.reload", map[string]any{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.waitFor(ctx, `document.querySelector("#status").textContent === "live"`, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	f.set(fixtureState(t, start, true))
	d.broadcast()
	if err := b.waitFor(ctx, `document.querySelector('.inst[data-instance="catalog-1"]').dataset.state === "exited"`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	checkDeadShare(t, b, "catalog-1")
}

// checkFirstPaint fails if the page shows no instance, no totals or no events.
func checkFirstPaint(t *testing.T, b *browser) {
	t.Helper()
	var got struct {
		Instances, Events, Cards int
		Phase                    string
	}
	if err := b.eval(`({Instances: document.querySelectorAll(".inst").length, Events: document.querySelectorAll("#events li").length,
		Cards: document.querySelectorAll("#totals .card").length, Phase: document.body.dataset.phase})`, &got); err != nil {
		t.Fatal(err)
	}
	if got.Instances != 3 || got.Events != 6 || got.Cards < 5 || got.Phase != "running" {
		t.Errorf("first paint before any server-sent event: %+v, want 3 instances, 6 events, the totals, phase running", got)
	}
}

// checkEventTimes fails on an event time that is not "setup" or a plausible offset, and on a time
// that runs into its event's label.
func checkEventTimes(t *testing.T, b *browser) {
	t.Helper()
	var rows []struct {
		T       string
		Right   float64
		KindX   float64
		Setup   bool
		Overlap bool
	}
	if err := b.eval(`[...document.querySelectorAll("#events li")].map((li) => {
		const t = li.querySelector(".t"), k = li.querySelector(".kind");
		return {T: t.textContent, Right: t.getBoundingClientRect().right, KindX: k.getBoundingClientRect().left,
			Setup: li.dataset.setup === "true", Overlap: t.scrollWidth > t.clientWidth};
	})`, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal("no events on the page")
	}
	for _, r := range rows {
		ok := r.T == "setup" && r.Setup || !r.Setup && len(r.T) >= 2 && len(r.T) <= 8 && r.T[len(r.T)-1] == 's'
		if !ok {
			t.Errorf("event time %q (setup %v): want \"setup\" for the setup's events, a few digits of seconds otherwise", r.T, r.Setup)
		}
		if r.Right > r.KindX+0.5 || r.Overlap {
			t.Errorf("event time %q overlaps its label (time ends at %.1fpx, label starts at %.1fpx, clipped %v)", r.T, r.Right, r.KindX, r.Overlap)
		}
	}
}

// checkChart fails without a time axis in seconds or without a mark for each chaos event in the window.
func checkChart(t *testing.T, b *browser) {
	t.Helper()
	var got struct {
		Ticks []string
		Marks []string
		Bars  int
		Width float64
		MarkX []float64
	}
	if err := b.eval(`(() => {
		const svg = document.querySelector("#chart");
		return {Ticks: [...svg.querySelectorAll(".axis.x text.tick")].map((e) => e.textContent),
			Marks: [...svg.querySelectorAll(".mark")].map((e) => e.dataset.kind),
			MarkX: [...svg.querySelectorAll(".mark line")].map((e) => e.getBoundingClientRect().left - svg.getBoundingClientRect().left),
			Bars: svg.querySelectorAll("rect.req").length, Width: svg.getBoundingClientRect().width};
	})()`, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Ticks) < 5 || got.Ticks[0] != "0s" {
		t.Errorf("time axis ticks %v: want one every 10 s from 0s (seconds since the load started)", got.Ticks)
	}
	if len(got.Marks) != 2 || got.Marks[0] != EventKill || got.Marks[1] != EventSlow {
		t.Errorf("chaos marks %v, want [kill slow]", got.Marks)
	}
	for _, x := range got.MarkX {
		if x <= 0 || x >= got.Width {
			t.Errorf("a chaos mark at %.1fpx is outside the chart (%.1fpx wide)", x, got.Width)
		}
	}
	if got.Bars != 40 {
		t.Errorf("%d request bars, want 40 (one per second of load)", got.Bars)
	}
}

// checkDeadShare fails if the dead instance id shows a share, a bar or a rate.
func checkDeadShare(t *testing.T, b *browser, id string) {
	t.Helper()
	var got struct{ Share, Bar, State string }
	if err := b.eval(`(() => { const e = document.querySelector('.inst[data-instance="`+id+`"]');
		return {Share: e.querySelector(".share").textContent, Bar: e.querySelector(".bar i").style.width, State: e.dataset.state}; })()`, &got); err != nil {
		t.Fatal(err)
	}
	if got.Share != "share–" || got.Bar != "0%" {
		t.Errorf("%s (%s) shows share %q, bar %q: a dead instance has no share", id, got.State, got.Share, got.Bar)
	}
}

// shot saves a screenshot in the artifact directory, or in testdata with UPDATE_SCREENSHOT=1.
func shot(t *testing.T, b *browser, name string) {
	t.Helper()
	png, err := b.screenshot()
	if err != nil {
		t.Fatal(err)
	}
	if len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	dir := t.ArtifactDir()
	if os.Getenv("UPDATE_SCREENSHOT") != "" {
		dir = "testdata"
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
