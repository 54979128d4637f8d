package chassis_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
