package chassis_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudchassis/kit/internal/hostilefile"
)

// TestConfigErrorExitCode runs a real binary: a bad PORT and a missing required variable give exit
// code 2 and one message naming both.
func TestConfigErrorExitCode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a process")
	}
	bin := filepath.Join(t.TempDir(), "strict")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/strict").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "PORT=abc")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit: %v, want code 2\n%s", err, out)
	}
	msg := string(out)
	for _, want := range []string{"config: 2 problems", `PORT="abc": not an integer`, "DATABASE_URL: required, not set"} {
		if !strings.Contains(msg, want) {
			t.Errorf("output lacks %q:\n%s", want, msg)
		}
	}

	// -help lists every variable and exits 0, without needing a valid environment.
	cmd = exec.Command(bin, "-help")
	cmd.Env = append(os.Environ(), "PORT=abc")
	out, err = cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "DATABASE_URL") || !strings.Contains(string(out), "DRAIN_DELAY") {
		t.Fatalf("-help: %v\n%s", err, out)
	}
}

// buildDeps builds testdata/deps (a service with its own settings that declares a client for
// "pricing") once per test binary.
var buildDeps = buildTestdata("deps")

// buildTestdata returns a function that builds the command testdata/name once per test binary and
// returns the binary's path.
func buildTestdata(name string) func() (string, error) {
	return sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "chassis-"+name)
		if err != nil {
			return "", err
		}
		bin := filepath.Join(dir, name)
		if out, err := exec.Command("go", "build", "-o", bin, "./testdata/"+name).CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build: %v\n%s", err, out)
		}
		return bin, nil
	})
}

type exitResult struct {
	code           int
	stderr, stdout string
	took           time.Duration
}

// runDeps runs testdata/deps with exactly env (the process environment is left out, so that the
// scan of CLIENT_* variables sees only these) and the minimal settings before it, and expects it to
// exit with an error.
func runDeps(t *testing.T, env ...string) exitResult {
	t.Helper()
	r := runDepsArgs(t, nil, append([]string{"HOST=127.0.0.1", "PORT=0", "ADMIN_PORT=0", "SHUTDOWN_TIMEOUT=2s", "DRAIN_DELAY=0s"}, env...)...)
	if r.code == 0 {
		t.Fatalf("%v: exit 0 (the service should not have started)\nstdout:\n%s\nstderr:\n%s", env, r.stdout, r.stderr)
	}
	return r
}

// problemLines counts the lines of a configuration error that start with each variable name.
func problemLines(stderr string) map[string]int {
	n := map[string]int{}
	for _, line := range strings.Split(stderr, "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "config: ")
		if i := strings.IndexAny(line, "=:"); i > 0 {
			n[line[:i]]++
		}
	}
	return n
}

// TestEveryGroupInOneStartupError: one bad variable in each group (chassis settings, the service's
// own settings, OTEL_*, a client's CLIENT_<NAME>_*, DISCOVERY_STATIC_<NAME>, a NAME_FILE, server
// protection) gives one start-up error, exit code 2, every variable once under its full name, and
// nothing of a file's content.
func TestEveryGroupInOneStartupError(t *testing.T) {
	shadow := hostilefile.Make(t, t.TempDir(), "s3cr3t").Shadow
	r := runDeps(t,
		"PORT=abc",                                                        // chassis settings
		"WORKERS=0x10",                                                    // WithConfig
		"OTEL_TRACES_SAMPLER=traceidratio", "OTEL_TRACES_SAMPLER_ARG=NaN", // telemetry
		"CLIENT_PRICING_TIMEOUT=abc", "CLIENT_PRICING_RETRIES=-1", // the dependency
		"DISCOVERY_STATIC_PRICING=not-a-hostport", // its discovery
		"LOG_LEVEL_FILE="+shadow,                  // a file
		"RATE_LIMIT_RPS=1e-300",                   // protection
	)
	if r.code != 2 {
		t.Fatalf("exit %d, want 2\n%s", r.code, r.stderr)
	}
	lines := problemLines(r.stderr)
	for _, v := range []string{"PORT", "WORKERS", "OTEL_TRACES_SAMPLER_ARG", "CLIENT_PRICING_TIMEOUT", "CLIENT_PRICING_RETRIES",
		"DISCOVERY_STATIC_PRICING", "LOG_LEVEL_FILE", "RATE_LIMIT_RPS"} {
		if lines[v] != 1 {
			t.Errorf("%s reported %d times, want once", v, lines[v])
		}
	}
	if !strings.Contains(r.stderr, "config: 8 problems") || lines["RETRIES"] != 0 || strings.Contains(r.stderr, "s3cr3t") {
		t.Errorf("want 8 problems under full names, no file content:\n%s", r.stderr)
	}
	if strings.Contains(r.stdout, `"ready"`) {
		t.Errorf("started:\n%s", r.stdout)
	}
	t.Logf("exit 2 after %s:\n%s", r.took, r.stderr)
}

// TestDependencyProblemsStopTheStart: problems of a declared dependency alone are found by Run
// before anything starts (#21.1): exit 2, each once, with its full name; misspelt variables of the
// declared dependency are problems too; nothing is logged as an error and nothing starts.
func TestDependencyProblemsStopTheStart(t *testing.T) {
	r := runDeps(t, "DISCOVERY_STATIC_PRICING=not-a-hostport")
	if r.code != 2 || problemLines(r.stderr)["DISCOVERY_STATIC_PRICING"] != 1 {
		t.Fatalf("bad static list: exit %d\n%s", r.code, r.stderr)
	}

	r = runDeps(t, "PORT=abc", "CLIENT_PRICING_TIMEOUT=abc", "CLIENT_PRICING_RETRIES=-1")
	lines := problemLines(r.stderr)
	if r.code != 2 || lines["PORT"] != 1 || lines["CLIENT_PRICING_TIMEOUT"] != 1 || lines["CLIENT_PRICING_RETRIES"] != 1 {
		t.Fatalf("exit %d, want 2 and all three\n%s", r.code, r.stderr)
	}

	r = runDeps(t, "CLIENT_PRICING_TIMEOUT=abc", "CLIENT_PRICING_RETRIES=-1", // no DISCOVERY_STATIC_PRICING
		"CLIENT_PRICNG_HEDGE_DELAY=10ms", "DISCOVERY_STATIC_PRICNG=127.0.0.1:1", "CLIENT_PRICING_RETRY_BASE_DELY=5ms",
		"CLIENT_CART_TIMEOUT=1s", "DISCOVERY_STATIC_CART=127.0.0.1:2") // another service's: a warning
	lines = problemLines(r.stderr)
	if r.code != 2 {
		t.Fatalf("exit %d, want 2\n%s", r.code, r.stderr)
	}
	for _, v := range []string{"CLIENT_PRICING_TIMEOUT", "CLIENT_PRICING_RETRIES", "DISCOVERY_STATIC_PRICING",
		"CLIENT_PRICNG_HEDGE_DELAY", "DISCOVERY_STATIC_PRICNG", "CLIENT_PRICING_RETRY_BASE_DELY"} {
		if lines[v] != 1 {
			t.Errorf("%s reported %d times, want once", v, lines[v])
		}
	}
	for _, want := range []string{"config: 6 problems", "did you mean CLIENT_PRICING_HEDGE_DELAY?",
		"did you mean DISCOVERY_STATIC_PRICING?", "did you mean CLIENT_PRICING_RETRY_BASE_DELAY?"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	for _, unwanted := range []string{`"level":"error"`, "client unusable", `"ready"`, "listening"} {
		if strings.Contains(r.stdout, unwanted) {
			t.Errorf("logs hold %q:\n%s", unwanted, r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "environment variables not read") || !strings.Contains(r.stdout, "CLIENT_CART_TIMEOUT") ||
		!strings.Contains(r.stdout, "DISCOVERY_STATIC_CART") {
		t.Errorf("want a warning naming the other service's variables:\n%s", r.stdout)
	}
}

// TestFileVariablesExitFast (#13.4): a NAME_FILE naming /dev/zero, a FIFO nobody writes to, or an
// oversized file exits 2 within a second, naming the file and echoing none of its content.
func TestFileVariablesExitFast(t *testing.T) {
	files := hostilefile.Make(t, t.TempDir(), "leak")
	fifo, big := files.FIFO, files.Big
	for _, path := range []string{"/dev/zero", fifo, big} {
		for _, v := range []string{"GREETING_FILE", "LOG_LEVEL_FILE"} {
			r := runDeps(t, v+"="+path)
			if r.code != 2 || r.took > time.Second || problemLines(r.stderr)[v] != 1 || strings.Contains(r.stderr, "leak") {
				t.Errorf("%s=%s: exit %d after %s, want 2 within 1s naming %s\n%s", v, path, r.code, r.took, v, r.stderr)
			}
			t.Logf("%s=%s: exit %d after %s: %s", v, path, r.code, r.took, strings.TrimSpace(r.stderr))
		}
	}
}

// TestBadNumbersExit2 (#13.5): NaN, infinities, overflow, out-of-range rates and non-decimal or
// octal-looking integers are configuration errors.
func TestBadNumbersExit2(t *testing.T) {
	for _, kv := range []string{
		"RATE_LIMIT_RPS=NaN", "RATE_LIMIT_RPS=1e-300", "RATE_LIMIT_RPS=Inf", "RATE_LIMIT_BURST=10000000000",
		"RATE_LIMIT_BURST=1e10", "SHED_SMOOTHING=NaN", "SHED_LATENCY_TOLERANCE=NaN", "SHED_SHEDDABLE_SHARE=NaN",
		"ACCESS_LOG_SAMPLE=NaN", "PORT=0x50", "PORT=010", "PORT=8_080", "PORT=99999999999999999999", "WORKERS=1e3",
		"HTTP_MAX_BODY_BYTES=0x1p4",
	} {
		r := runDeps(t, kv)
		name, _, _ := strings.Cut(kv, "=")
		if r.code != 2 || problemLines(r.stderr)[name] != 1 {
			t.Errorf("%s: exit %d, want 2 naming %s\n%s", kv, r.code, name, r.stderr)
		}
	}
	r := runDeps(t, "OTEL_TRACES_SAMPLER=parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG=NaN")
	if r.code != 2 || problemLines(r.stderr)["OTEL_TRACES_SAMPLER_ARG"] != 1 {
		t.Errorf("OTEL_TRACES_SAMPLER_ARG=NaN: exit %d\n%s", r.code, r.stderr)
	}
}
