package chassis_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/lifecycle"
)

// buildTasks builds testdata/tasks (a service with admin tasks and a "pricing" dependency) once per
// test binary.
var buildTasks = buildTestdata("tasks")

// freePorts returns n loopback ports nothing listens on.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	var ports []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}
	return ports
}

// runTasks runs testdata/tasks with args and exactly env (plus PATH), and returns its exit code and
// output. sig, when not nil, is sent once the task prints "waiting".
func runTasks(t *testing.T, sig os.Signal, args []string, env ...string) exitResult {
	t.Helper()
	bin, err := buildTasks()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOST=127.0.0.1", "SHUTDOWN_TIMEOUT=5s", "DRAIN_DELAY=0s"}, env...)
	var stdout, stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	signalled := false
	for {
		n, rerr := out.Read(buf)
		stdout.Write(buf[:n])
		if sig != nil && !signalled && strings.Contains(stdout.String(), "wait: waiting") {
			signalled = true
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
		}
		if rerr != nil {
			break
		}
	}
	err = cmd.Wait()
	r := exitResult{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(began)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// TestTaskBinary runs a real binary's tasks (#20.2): a task gets the service's configuration and
// arguments, opens no port (it can bind PORT and ADMIN_PORT itself while it runs) and registers
// nothing; exit codes are the task's (0, 1, its own 3); an unknown task exits 2 with the list; a bad
// variable exits 2 before the task runs; -help lists the tasks with their descriptions.
func TestTaskBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a process")
	}
	ports := freePorts(t, 2)
	base := []string{"PORT=" + ports[0], "ADMIN_PORT=" + ports[1], "DISCOVERY_STATIC_PRICING=127.0.0.1:1"}

	r := runTasks(t, nil, []string{"greet", "a", "-b"}, append(base, "GREETING=hi")...)
	if r.code != 0 || !strings.Contains(r.stdout, "greet: hi a -b\n") {
		t.Errorf("greet: exit %d, want 0 and the configured greeting with the arguments\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, unwanted := range []string{"listening", `"ready"`, "registered"} {
		if strings.Contains(r.stdout, unwanted) {
			t.Errorf("greet: the logs hold %q: the task served\n%s", unwanted, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, `"task done"`) {
		t.Errorf("greet: no \"task done\" log line:\n%s", r.stdout)
	}

	r = runTasks(t, nil, []string{"ports"}, base...)
	if r.code != 0 || strings.Count(r.stdout, " free\n") != 2 {
		t.Errorf("ports: exit %d, want PORT and ADMIN_PORT free while the task runs\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}

	r = runTasks(t, nil, []string{"fail"}, base...)
	if r.code != chassis.ExitError || !strings.Contains(r.stderr, "the task failed on purpose") {
		t.Errorf("fail: exit %d, want 1 and the error\n%s", r.code, r.stderr)
	}
	r = runTasks(t, nil, []string{"exit3"}, base...)
	if r.code != 3 {
		t.Errorf("exit3: exit %d, want the task's own 3\n%s", r.code, r.stderr)
	}

	r = runTasks(t, nil, []string{"migrate", "up"}, base...)
	if r.code != chassis.ExitConfig || !strings.Contains(r.stderr, `unknown task "migrate"`) {
		t.Errorf("unknown task: exit %d, want 2\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"greet  print the greeting", "fail ", "exit3", "ports", "wait "} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("unknown task: the list lacks %q:\n%s", want, r.stderr)
		}
	}

	// The same configuration as the service: a bad variable stops the task before it runs, and so
	// does a declared dependency without instances.
	r = runTasks(t, nil, []string{"greet"}, append(base, "GREETING_FILE=/nonexistent")...)
	if r.code != chassis.ExitConfig || strings.Contains(r.stdout, "greet:") {
		t.Errorf("bad variable: exit %d, want 2 before the task runs\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	r = runTasks(t, nil, []string{"greet"}, "PORT="+ports[0], "ADMIN_PORT="+ports[1])
	if r.code != chassis.ExitConfig || !strings.Contains(r.stderr, "DISCOVERY_STATIC_PRICING") {
		t.Errorf("no pricing instances: exit %d, want 2 naming DISCOVERY_STATIC_PRICING\n%s", r.code, r.stderr)
	}

	r = runTasks(t, nil, []string{"-help"}, base...)
	if r.code != 0 || !strings.Contains(r.stdout, "tasks TASK [ARGS...]") {
		t.Fatalf("-help: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	tasks := r.stdout[strings.Index(r.stdout, "Tasks ("):strings.Index(r.stdout, "This service:")]
	for _, want := range []string{"greet  print the greeting and the arguments", "wait   wait until cancelled by a signal"} {
		if !strings.Contains(tasks, want) {
			t.Errorf("-help's Tasks section lacks %q:\n%s", want, tasks)
		}
	}
	t.Logf("-help:\n%s", tasks)
}

// TestTaskSignalCancels: SIGTERM cancels the task's context; the task returns, telemetry is
// flushed, and the process exits with the task's error (1) at once, not after SHUTDOWN_TIMEOUT.
func TestTaskSignalCancels(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a process")
	}
	r := runTasks(t, syscall.SIGTERM, []string{"wait"}, "PORT=0", "ADMIN_PORT=0", "DISCOVERY_STATIC_PRICING=127.0.0.1:1")
	if r.code != chassis.ExitError || !strings.Contains(r.stdout, "wait: cancelled") || !strings.Contains(r.stderr, "context canceled") {
		t.Errorf("exit %d, want 1 after the task saw its context cancelled\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if r.took > 4*time.Second {
		t.Errorf("took %s: the signal did not end the task promptly", r.took)
	}
}

// TestTaskCallsDependency: a task reaches a dependency through svc.Client (discovery, balancer,
// resilience), with the service's settings; no server is started, the registrar is not asked, and
// no OnStart hook runs.
func TestTaskCallsDependency(t *testing.T) {
	var hits int
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		io.WriteString(w, "42")
	}))
	defer backend.Close()
	var cfg struct {
		Greeting string `envconfig:"GREETING"`
	}
	var registrarAsked, hookRan bool
	svc, err := chassis.New("reindexer", chassis.WithoutSignals(), chassis.WithConfig(&cfg), chassis.WithEnv(env(
		"DISCOVERY_STATIC_PRICING", strings.TrimPrefix(backend.URL, "http://"), "GREETING", "hi")),
		chassis.WithRegistrar(func(*chassis.Service) (discovery.Registrar, error) {
			registrarAsked = true
			return nil, errors.New("a task must not register")
		}))
	if err != nil {
		t.Fatal(err)
	}
	svc.OnStart("worker", func(context.Context) error { hookRan = true; return nil })
	pricing := svc.Client("pricing")
	var got, greeting string
	var gotArgs []string
	svc.Task("reindex", "read prices", func(ctx context.Context, args []string) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://pricing/price", nil)
		resp, err := pricing.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got, greeting, gotArgs = string(b), cfg.Greeting, args
		if svc.Addr() != "" || svc.AdminAddr() != "" {
			return fmt.Errorf("a server is bound during the task: %q, %q", svc.Addr(), svc.AdminAddr())
		}
		return err
	})
	if tasks := svc.Tasks(); len(tasks) != 1 || tasks[0] != (chassis.TaskInfo{Name: "reindex", Description: "read prices"}) {
		t.Errorf("Tasks() = %v", tasks)
	}
	if err := svc.RunTask(context.Background(), "reindex", []string{"--all"}); err != nil {
		t.Fatal(err)
	}
	if got != "42" || hits != 1 || greeting != "hi" || len(gotArgs) != 1 || gotArgs[0] != "--all" {
		t.Errorf("task saw body %q (%d calls), greeting %q, args %q", got, hits, greeting, gotArgs)
	}
	if registrarAsked || hookRan {
		t.Errorf("registrar asked %v, OnStart hook ran %v: a task must neither register nor start serving-side work", registrarAsked, hookRan)
	}
	if err := svc.RunTask(context.Background(), "reindex", nil); !errors.Is(err, lifecycle.ErrAlreadyRun) {
		t.Errorf("second RunTask: %v, want ErrAlreadyRun", err)
	}
	if err := svc.Run(context.Background()); !errors.Is(err, lifecycle.ErrAlreadyRun) {
		t.Errorf("Run after RunTask: %v, want ErrAlreadyRun", err)
	}
}

// TestRunTaskErrors: an unknown name is ErrUnknownTask naming the tasks; a declared dependency's bad
// variable is a *config.Error before the task runs; a task that ignores its cancelled context is
// given up after SHUTDOWN_TIMEOUT; the task's own error is returned as is.
func TestRunTaskErrors(t *testing.T) {
	newSvc := func(kv ...string) *chassis.Service {
		t.Helper()
		svc, err := chassis.New("admin", chassis.WithoutSignals(), chassis.WithEnv(env(kv...)))
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	ran := false
	svc := newSvc()
	svc.Task("migrate", "apply migrations", func(context.Context, []string) error { ran = true; return nil })
	svc.Task("seed", "load fixtures", func(context.Context, []string) error { ran = true; return nil })
	err := svc.RunTask(context.Background(), "migrat", nil)
	if !errors.Is(err, chassis.ErrUnknownTask) || !strings.Contains(err.Error(), "migrate, seed") || ran {
		t.Errorf("unknown task: %v (ran %v), want ErrUnknownTask listing migrate, seed", err, ran)
	}

	svc = newSvc("CLIENT_PRICING_TIMEOUT", "soon", "DISCOVERY_STATIC_PRICING", "127.0.0.1:1")
	svc.Client("pricing")
	svc.Task("migrate", "", func(context.Context, []string) error { ran = true; return nil })
	var ce *config.Error
	if err := svc.RunTask(context.Background(), "migrate", nil); !errors.As(err, &ce) || ran || !strings.Contains(err.Error(), "CLIENT_PRICING_TIMEOUT") {
		t.Errorf("bad dependency setting: %v (ran %v), want a *config.Error naming CLIENT_PRICING_TIMEOUT", err, ran)
	}

	svc = newSvc("SHUTDOWN_TIMEOUT", "200ms")
	release := make(chan struct{})
	defer close(release)
	svc.Task("stubborn", "", func(ctx context.Context, _ []string) error { <-release; return nil })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	began := time.Now()
	err = svc.RunTask(ctx, "stubborn", nil)
	if err == nil || !strings.Contains(err.Error(), "did not return within SHUTDOWN_TIMEOUT") || time.Since(began) > 2*time.Second {
		t.Errorf("task ignoring its context: %v after %s, want given up after SHUTDOWN_TIMEOUT", err, time.Since(began))
	}

	svc = newSvc()
	errBoom := errors.New("boom")
	svc.Task("boom", "", func(context.Context, []string) error { return fmt.Errorf("step 2: %w", errBoom) })
	if err := svc.RunTask(context.Background(), "boom", nil); !errors.Is(err, errBoom) {
		t.Errorf("failing task: %v, want its error", err)
	}
}

func TestTaskRegistrationPanics(t *testing.T) {
	svc, err := chassis.New("admin", chassis.WithoutSignals(), chassis.WithEnv(env()))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.RunTask(context.Background(), "ok", nil) //nolint:errcheck // frees what New built
	fn := func(context.Context, []string) error { return nil }
	svc.Task("ok", "", fn)
	for _, c := range []struct {
		name string
		fn   chassis.TaskFunc
	}{{"ok", fn}, {"", fn}, {"-x", fn}, {"two words", fn}, {"nil", nil}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Task(%q) did not panic", c.name)
				}
			}()
			svc.Task(c.name, "", c.fn)
		}()
	}
}
