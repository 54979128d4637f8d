package chassis_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/internal/consultest"
	"github.com/cloudchassis/kit/problem"
)

// runDepsArgs runs testdata/deps with args and exactly env, and returns its exit code, output and
// run time (exit 0 included).
func runDepsArgs(t *testing.T, args []string, env ...string) exitResult {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs a process")
	}
	bin, err := buildDeps()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err = cmd.Run()
	r := exitResult{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%v %v: %v\nstdout:\n%s\nstderr:\n%s", args, env, err, r.stdout, r.stderr)
	}
	return r
}

// TestHelpOwnVariablesFirstGroupedAndWrapped (#21.6): -help exits 0 on standard output, lists the
// service's own variables before the chassis', the chassis' under group headings, and no line is
// wider than COLUMNS (100 when unset).
func TestHelpOwnVariablesFirstGroupedAndWrapped(t *testing.T) {
	for _, c := range []struct {
		columns string
		width   int
	}{{"", 100}, {"80", 80}, {"60", 60}} {
		env := []string{"PORT=abc"} // -help needs no valid environment
		if c.columns != "" {
			env = append(env, "COLUMNS="+c.columns)
		}
		r := runDepsArgs(t, []string{"-help"}, env...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("COLUMNS=%q: exit %d, stderr %q", c.columns, r.code, r.stderr)
		}
		out := r.stdout
		order := []string{"Usage: deps", "This service:", "GREETING", "WORKERS", "Chassis: server:", "PORT",
			"Chassis: HTTP limits:", "Chassis: discovery and registration:", "Chassis: load shedding:",
			"Chassis: rate limiting:", "Chassis: bearer-token authentication:", "Chassis: TLS of the servers:",
			"Chassis: logging:", "Chassis: admin port:", "Chassis: clients, per dependency"}
		at := 0
		for _, want := range order {
			i := strings.Index(out[at:], want)
			if i < 0 {
				t.Fatalf("COLUMNS=%q: %q missing or out of order:\n%s", c.columns, want, out)
			}
			at += i
		}
		widest := 0
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			widest = max(widest, len(sc.Text()))
			// Only a piece with no space nor comma to break at may overflow, and only on a narrow
			// terminal.
			if len(sc.Text()) > c.width && (c.width >= 80 || strings.ContainsAny(strings.TrimRight(strings.TrimSpace(sc.Text()), ","), " ,")) {
				t.Errorf("COLUMNS=%q: line of %d columns: %q", c.columns, len(sc.Text()), sc.Text())
			}
		}
		t.Logf("COLUMNS=%q: %d lines, widest %d", c.columns, strings.Count(out, "\n"), widest)
	}
}

// Every chassis variable belongs to a named group: a new setting must be placed in one.
func TestEveryChassisVariableIsGrouped(t *testing.T) {
	vars, err := chassis.EnvReference(chassis.WithConfig(&struct {
		Greeting string `envconfig:"GREETING"`
	}{}))
	if err != nil {
		t.Fatal(err)
	}
	if vars[0].Name != "GREETING" || vars[0].Group != chassis.GroupService {
		t.Fatalf("first variable %+v, want the service's own", vars[0])
	}
	seen := map[string]bool{}
	last := ""
	for _, v := range vars {
		if v.Group == "" || strings.HasSuffix(v.Group, "other") {
			t.Errorf("%s: group %q", v.Name, v.Group)
		}
		if v.Group != last && seen[v.Group] {
			t.Errorf("group %q is split (at %s)", v.Group, v.Name)
		}
		seen[v.Group], last = true, v.Group
	}
}

// TestArgumentsAndFlagsExit2 (#21.9): positional arguments and unknown flags exit 2 with a short
// message, not the whole reference.
func TestArgumentsAndFlagsExit2(t *testing.T) {
	for _, args := range [][]string{{"serve"}, {"-version", "extra", "more"}, {"-verbose"}} {
		r := runDepsArgs(t, args)
		if r.code != 2 || !strings.Contains(r.stderr, "run deps -help") || strings.Contains(r.stderr, "HTTP_READ_TIMEOUT") {
			t.Errorf("%q: exit %d, want 2 and a short message\n%s", args, r.code, r.stderr)
		}
		if args[0] != "-verbose" && !strings.Contains(r.stderr, `unexpected arguments`) {
			t.Errorf("%q: the message does not name the arguments:\n%s", args, r.stderr)
		}
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestNoConsulAgentExit1 (#21.2): DISCOVERY=consul with no agent retries registration until
// START_TIMEOUT, says so once in the log, then exits 1 naming the agent's address and the variable
// it came from. Every log line carries "service" once (#21.7), although a client of another service
// logs its discovery failures meanwhile.
func TestNoConsulAgentExit1(t *testing.T) {
	addr := closedPort(t)
	start := time.Now()
	r := runDeps(t, "DISCOVERY=consul", "CONSUL_HTTP_ADDR="+addr, "START_TIMEOUT=1s")
	took := time.Since(start)
	want := "no Consul agent at http://" + addr + " (CONSUL_HTTP_ADDR) within START_TIMEOUT (1s)"
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("exit %d, want 1 and %q\n%s", r.code, want, r.stderr)
	}
	if took < time.Second || took > 10*time.Second {
		t.Errorf("exited after %s, want about START_TIMEOUT (1s)", took)
	}
	if n := strings.Count(r.stdout, "retrying until START_TIMEOUT"); n != 1 {
		t.Errorf("the retry is announced %d times, want once:\n%s", n, r.stdout)
	}
	if strings.Contains(r.stdout, `"ready"`) {
		t.Errorf("became ready:\n%s", r.stdout)
	}
	checkOneServiceKey(t, r.stdout)
	t.Logf("exit 1 after %s:\n%s", took, r.stderr)
}

// checkOneServiceKey fails for a JSON log line that holds a key twice, such as "service".
func checkOneServiceKey(t *testing.T, logs string) {
	t.Helper()
	peer := 0
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if n := strings.Count(line, `"service":`); n != 1 {
			t.Errorf("%d \"service\" keys in %s", n, line)
		}
		if strings.Contains(line, `"peer.service":"pricing"`) {
			peer++
		}
	}
	if peer == 0 {
		t.Errorf("no line names the callee under peer.service:\n%s", logs)
	}
}

// signalWriter closes seen the first time the log holds text.
type signalWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	text string
	seen chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, _ := w.buf.Write(p)
	if w.seen != nil && strings.Contains(w.buf.String(), w.text) {
		close(w.seen)
		w.seen = nil
	}
	return n, nil
}

// TestConsulAgentAppearsLate (#21.2): an agent that comes up while the service retries gets the
// registration, and the service becomes ready; with no HOST nor ADVERTISE_ADDRESS the instance is
// registered under the agent's node address, which also names it (no "orders--8080-…").
func TestConsulAgentAppearsLate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	agent := consultest.StartDev(t)
	proxy := consultest.NewProxy(t, agent.HTTPAddr)
	proxy.Down()

	logs := &signalWriter{text: "no Consul agent at http://" + proxy.Addr() + " (CONSUL_HTTP_ADDR): retrying", seen: make(chan struct{})}
	seen := logs.seen
	svc, err := chassis.New("orders", chassis.WithEnv(env("DISCOVERY", "consul", "CONSUL_HTTP_ADDR", proxy.Addr(),
		"HOST", "", "START_TIMEOUT", "30s", "LOG_LEVEL", "info")), chassis.WithLogOutput(logs))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case <-seen:
	case err := <-done:
		t.Fatalf("Run ended before retrying: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no retry message within 20s")
	}
	select {
	case <-svc.Ready():
		t.Fatal("ready without a registration")
	default:
	}
	proxy.Up()
	select {
	case <-svc.Ready():
	case err := <-done:
		t.Fatalf("Run ended: %v\n%s", err, logs.buf.String())
	case <-time.After(25 * time.Second):
		t.Fatal("not ready within 25s of the agent's coming up")
	}
	services, err := agent.Client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for id, s := range services {
		if s.Service != "orders" {
			continue
		}
		ids = append(ids, id)
		if s.Address != "127.0.0.1" || !strings.HasPrefix(id, "orders-127.0.0.1-"+strconv.Itoa(s.Port)+"-") {
			t.Errorf("registered %s at %q:%d", id, s.Address, s.Port)
		}
	}
	if len(ids) != 1 {
		t.Fatalf("instances of orders: %v", ids)
	}
}

// TestLogLevelAnyCase (#21.9): LOG_LEVEL and LOG_FORMAT are case-insensitive; other values are
// still refused.
func TestLogLevelAnyCase(t *testing.T) {
	svc, err := chassis.New("svc", chassis.WithEnv(env("LOG_LEVEL", "DEBUG", "LOG_FORMAT", "Console")), chassis.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	if s := svc.Settings(); s.LogLevel != "debug" || s.LogFormat != "console" {
		t.Fatalf("LOG_LEVEL %q, LOG_FORMAT %q", s.LogLevel, s.LogFormat)
	}
	_, err = chassis.New("svc", chassis.WithEnv(env("LOG_LEVEL", "Verbose")), chassis.WithLogOutput(io.Discard))
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), `LOG_LEVEL="Verbose"`) {
		t.Fatalf("LOG_LEVEL=Verbose: %v", err)
	}
}

// TestUnmatchedAnswersAreProblems (#21.9): 404 and 405 are problem+json with the ServeMux's status
// and Allow header.
func TestUnmatchedAnswersAreProblems(t *testing.T) {
	svc, err := chassis.New("svc", chassis.WithEnv(env()), chassis.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, r.PathValue("id")) })
	srv := httptest.NewServer(svc.Handler())
	defer srv.Close()
	for _, c := range []struct {
		method, path string
		status       int
		allow        string
	}{{"GET", "/nope", 404, ""}, {"DELETE", "/items/7", 405, "GET, HEAD"}, {"HEAD", "/nope", 404, ""}} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != c.status || res.Header.Get("Allow") != c.allow || res.Header.Get("Content-Type") != problem.ContentType {
			t.Fatalf("%s %s: %d Allow %q Content-Type %q", c.method, c.path, res.StatusCode, res.Header.Get("Allow"), res.Header.Get("Content-Type"))
		}
		if c.method == "HEAD" {
			continue
		}
		var p problem.Details
		if err := json.Unmarshal(body, &p); err != nil || p.Status != c.status || p.Title != http.StatusText(c.status) || p.Detail == "" {
			t.Fatalf("%s %s: body %q (%v)", c.method, c.path, body, err)
		}
		if strings.Contains(string(body), "404 page not found") || strings.Contains(string(body), "Method Not Allowed\n") {
			t.Fatalf("text answer leaked: %q", body)
		}
	}
}
