package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/internal/syncbuf"
)

func TestMain(m *testing.M) {
	code := func() int {
		defer func() {
			if launcherDir != "" {
				_ = os.RemoveAll(launcherDir)
			}
		}()
		return m.Run()
	}()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	buildOnce   sync.Once
	launcherBin string
	launcherDir string
	buildErr    error
)

// buildLauncher compiles this command and the shop's services once per test binary, in one go
// build (the launcher's runs then use -prebuilt, so that each run does not link them again).
func buildLauncher(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		launcherDir, buildErr = os.MkdirTemp("", "chassis-cluster-test-")
		if buildErr != nil {
			return
		}
		launcherBin = filepath.Join(launcherDir, "cluster")
		args := []string{"build", "-o", launcherDir + string(os.PathSeparator), "."}
		for _, s := range services {
			args = append(args, shopPackage+s)
		}
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return launcherBin
}

// launcher is a running `cluster` process.
type launcher struct {
	cmd     *exec.Cmd
	out     *syncbuf.Buffer
	lines   chan string
	exited  chan struct{}
	waitErr error
	summary string
}

func startLauncher(t *testing.T, args ...string) *launcher {
	t.Helper()
	bin := buildLauncher(t)
	summary := filepath.Join(t.TempDir(), "summary.json")
	cmd := exec.Command(bin, append([]string{"-summary-json", summary, "-prebuilt", launcherDir}, args...)...)
	cmd.Dir = "." // inside the module: the launcher builds the shop from here
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "CONSUL_HTTP_ADDR=") })
	detach(cmd)
	l := &launcher{cmd: cmd, out: &syncbuf.Buffer{}, lines: make(chan string, 1024), exited: make(chan struct{}), summary: summary}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = l.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			_, _ = l.out.Write([]byte(line + "\n"))
			select {
			case l.lines <- line:
			default:
			}
		}
		l.waitErr = cmd.Wait()
		close(l.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-l.exited:
		default:
			_ = cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-l.exited:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				<-l.exited
			}
		}
		if t.Failed() {
			t.Logf("launcher output:\n%s", l.out.String())
		}
	})
	return l
}

// waitLine waits for an output line matching re and returns its submatches.
func (l *launcher) waitLine(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case line := <-l.lines:
			if m := re.FindStringSubmatch(line); m != nil {
				return m
			}
		case <-l.exited:
			t.Fatalf("launcher exited (%v) before printing %q", l.waitErr, re)
		case <-timer.C:
			t.Fatalf("no line matching %q within %s", re, timeout)
		}
	}
}

func (l *launcher) wait(t *testing.T, timeout time.Duration) Summary {
	t.Helper()
	select {
	case <-l.exited:
	case <-time.After(timeout):
		t.Fatalf("launcher still running after %s", timeout)
	}
	if l.waitErr != nil {
		t.Fatalf("launcher: %v", l.waitErr)
	}
	data, err := os.ReadFile(l.summary)
	if err != nil {
		t.Fatal(err)
	}
	var s Summary
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

var (
	reDashboard = regexp.MustCompile(`dashboard: (http://\S+)`)
	reLoad      = regexp.MustCompile(`\] load: `)
)

// TestDemoWithChaos runs the launcher for 30 s with the chaos schedule, watches it in headless
// Chromium (and kills an instance from the dashboard), then checks the summary: at least 99.9% of
// idempotent requests answered, every chaos event reported with its reaction, every child gone.
func TestDemoWithChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole cluster for 30 s; skipped with -short")
	}
	const duration = 30 * time.Second
	l := startLauncher(t, "-duration", duration.String(), "-rate", "100", "-instances", "3", "-chaos",
		"-dashboard", "127.0.0.1:0", "-seed", "7")
	dash := l.waitLine(t, reDashboard, 3*time.Minute)[1]
	l.waitLine(t, reLoad, time.Minute)

	t.Run("dashboard", func(t *testing.T) {
		testDashboard(t, dash)
	})

	s := l.wait(t, duration+2*time.Minute)
	tot := s.Totals
	t.Logf("requests %d, ok %.4f, idempotent %d ok %.4f, p50 %.1fms p99 %.1fms p99.9 %.1fms, retried %d, degraded %d",
		tot.Requests, tot.SuccessRate, tot.Idempotent, tot.IdempotentRate, tot.P50Ms, tot.P99Ms, tot.P999Ms, tot.Retried, tot.Degraded)
	if tot.Requests < int(0.8*100*duration.Seconds()) {
		t.Errorf("only %d requests in %s at 100/s", tot.Requests, duration)
	}
	if tot.IdempotentRate < 0.999 {
		t.Errorf("idempotent success %.4f < 99.9%%; failures: %v", tot.IdempotentRate, tot.ErrorSamples)
	}
	// Every failed request is explained: status, route, instance and a reason.
	explained := 0
	for _, f := range tot.Failures {
		explained += f.Count
		if f.Reason == "" || f.Route == "" || f.Status == "" {
			t.Errorf("unexplained failure group %+v", f)
		}
		t.Logf("failed: %s (%s)", f, f.Detail)
	}
	if explained != tot.Requests-tot.OK {
		t.Errorf("the summary explains %d failures of %d: %+v", explained, tot.Requests-tot.OK, tot.Failures)
	}
	kinds := map[string]bool{}
	for _, e := range s.Events {
		if e.Chaos {
			if !e.Done || e.Reaction == "" {
				t.Errorf("event %s %s has no reaction: %+v", e.Kind, e.Target, e)
			}
			kinds[e.Kind] = true
		}
	}
	for _, k := range []string{EventKill, EventSlow, EventRolling, EventOutage, EventSpike} {
		if !kinds[k] {
			t.Errorf("summary has no %q event; events: %+v", k, s.Events)
		}
	}
	if s.Shutdown.Stopped < 12 || s.Shutdown.Interrupted {
		t.Errorf("shutdown: %+v, want at least 12 instances stopped, not interrupted", s.Shutdown)
	}
	assertNoOrphans(t, s)
}

// testDashboard loads the dashboard in headless Chromium, checks that it lists every instance,
// kills one through its button and waits for the page to show it dead and its replacement ready,
// updated live over server-sent events. It saves a screenshot in its artifact directory, or in
// testdata/dashboard.png with UPDATE_SCREENSHOT=1.
func testDashboard(t *testing.T, url string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := openBrowser(t, url)
	if err := b.waitFor(ctx, `document.querySelectorAll('.inst[data-state="ready"]').length >= 12 && document.body.dataset.phase === "running"`, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	checkEventTimes(t, b)
	var ids []string
	if err := b.eval(`[...document.querySelectorAll('.inst')].map(e => e.dataset.instance)`, &ids); err != nil {
		t.Fatal(err)
	}
	for _, svc := range services {
		for i := 1; i <= 3; i++ {
			if id := svc + "-" + strconv.Itoa(i); !slices.Contains(ids, id) {
				t.Errorf("dashboard does not list %s (lists %v)", id, ids)
			}
		}
	}
	var status string
	if err := b.eval(`document.querySelector('#status').textContent`, &status); err != nil || status != "live" {
		t.Errorf("status %q (%v), want live (server-sent events connected)", status, err)
	}
	// Kill a ready catalog instance with its button (the chaos schedule may have killed one
	// already, so which one is read off the page); the page must show it dead, the event, and a
	// replacement catalog instance ready, without a reload.
	var victim struct {
		ID  string
		Max float64 // the highest catalog instance number before the kill
	}
	if err := b.eval(`(() => {
		const ready = [...document.querySelectorAll('.svc[data-service="catalog"] .inst[data-state="ready"]')];
		const all = [...document.querySelectorAll('.svc[data-service="catalog"] .inst')];
		ready[0].querySelector('button[data-act="kill"]').click();
		return {ID: ready[0].dataset.instance, Max: Math.max(...all.map((e) => Number(e.dataset.instance.split("-")[1])))};
	})()`, &victim); err != nil {
		t.Fatal(err)
	}
	if err := b.waitFor(ctx, `(() => {
		const dead = document.querySelector('.inst[data-instance="`+victim.ID+`"]');
		const ev = document.querySelector('#events li[data-kind="kill"][data-target="`+victim.ID+`"]');
		const replaced = [...document.querySelectorAll('.svc[data-service="catalog"] .inst[data-state="ready"]')]
			.some((e) => Number(e.dataset.instance.split("-")[1]) > `+strconv.FormatFloat(victim.Max, 'f', 0, 64)+`);
		return !!dead && (dead.dataset.state === "killed" || dead.dataset.state === "exited") && !!ev && replaced;
	})()`, 20*time.Second); err != nil {
		t.Fatalf("after killing %s: %v", victim.ID, err)
	}
	// A few more updates so the screenshot shows traffic and the kill's reaction.
	_ = b.waitFor(ctx, `!!document.querySelector('#events li[data-kind="kill"][data-target="`+victim.ID+`"] .reaction')`, 10*time.Second)
	png, err := b.screenshot()
	if err != nil {
		t.Fatal(err)
	}
	if len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	// The committed screenshot is refreshed only on request, so a test run leaves the tree clean;
	// otherwise it goes to the artifact directory (kept with -artifacts).
	dir := t.ArtifactDir()
	if os.Getenv("UPDATE_SCREENSHOT") != "" {
		dir = "testdata"
	}
	if err := os.WriteFile(filepath.Join(dir, "dashboard.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// assertNoOrphans fails if any process the launcher started still runs: each child pid, and any
// process whose command line points into the launcher's build directory.
func assertNoOrphans(t *testing.T, s Summary) {
	t.Helper()
	if len(s.ChildPids) == 0 {
		t.Fatal("summary lists no child pids")
	}
	pids := s.ChildPids
	if s.RegistryPid != 0 {
		pids = append(pids, s.RegistryPid)
	}
	// The launcher has exited; its children, if any survived, now belong to init and are visible
	// under /proc. Give the kernel a moment to finish reaping.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var alive []string
		for _, pid := range pids {
			if cmd, ok := processCmdline(pid); ok && (strings.Contains(cmd, s.BinDir) || strings.Contains(cmd, "chassis-demo-")) {
				alive = append(alive, fmt.Sprintf("%d %s", pid, cmd))
			}
		}
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if cmd, ok := processCmdline(pid); ok && s.BinDir != "" && strings.Contains(cmd, s.BinDir) {
				alive = append(alive, fmt.Sprintf("%d %s", pid, cmd))
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan processes after the launcher exited:\n%s", strings.Join(alive, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// processCmdline returns the command line of a live (non-zombie) process.
func processCmdline(pid int) (string, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", false
	}
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
		return "", false
	}
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "", false
	}
	return strings.ReplaceAll(string(cmd), "\x00", " "), true
}

// TestDemoWithLocalConsul runs the demo against a real Consul agent the launcher starts
// (-consul=local), with chaos, until it is interrupted with SIGINT as a user's Ctrl-C would: the
// first scheduled kill must be survived, and the launcher must stop every instance and the agent.
// Needs the consul binary: scripts/install-consul.sh.
func TestDemoWithLocalConsul(t *testing.T) {
	localRegistryDemo(t, "consul", "local Consul agent", "-consul=local")
}

// TestDemoWithLocalEtcd is TestDemoWithLocalConsul on etcd (-registry=etcd): the services register
// under leases and find each other through etcd watches. Needs the etcd binary:
// scripts/install-etcd.sh.
func TestDemoWithLocalEtcd(t *testing.T) {
	localRegistryDemo(t, "etcd", "local etcd member", "-registry=etcd")
}

// localRegistryDemo runs the demo on a registry binary the launcher starts, until a kill's
// reaction is reported, then interrupts it and checks the summary.
func localRegistryDemo(t *testing.T, binary, kind string, flags ...string) {
	if testing.Short() {
		t.Skip("runs the cluster against a real registry; skipped with -short")
	}
	if _, err := findBinary("go", binary); err != nil {
		t.Fatal(err)
	}
	l := startLauncher(t, append(flags, "-duration", "0", "-rate", "80", "-instances", "2", "-chaos",
		"-dashboard", "", "-seed", "11")...)
	l.waitLine(t, regexp.MustCompile(`registry: `+kind), 3*time.Minute)
	l.waitLine(t, reLoad, time.Minute)
	// The first scheduled event of a run until Ctrl-C is a kill at 9 s; its reaction is reported 5 s later.
	l.waitLine(t, regexp.MustCompile(`↳ kill: `), 40*time.Second)
	if err := l.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	s := l.wait(t, time.Minute)
	if !strings.Contains(s.Registry, kind) {
		t.Errorf("registry %q", s.Registry)
	}
	if !s.Shutdown.Interrupted {
		t.Errorf("shutdown %+v: want interrupted", s.Shutdown)
	}
	if s.RegistryPid == 0 {
		t.Error("summary has no registry pid")
	}
	tot := s.Totals
	t.Logf("requests %d, idempotent ok %.4f, p99 %.1fms", tot.Requests, tot.IdempotentRate, tot.P99Ms)
	if tot.Requests < 500 {
		t.Errorf("only %d requests", tot.Requests)
	}
	if tot.IdempotentRate < 0.999 {
		t.Errorf("idempotent success %.4f < 99.9%%; failures: %v", tot.IdempotentRate, tot.ErrorSamples)
	}
	found := false
	for _, e := range s.Events {
		found = found || (e.Kind == EventKill && e.Done)
	}
	if !found {
		t.Errorf("no completed kill event: %+v", s.Events)
	}
	assertNoOrphans(t, s)
}
