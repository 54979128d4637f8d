package main

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestPolyglot runs the demo as a user would (from the repository root) for 25 s: a SIGKILLed python
// backend behind its ambassador and a rolling restart of the hello instances behind HAProxy lose no
// request of a client that never retries.
func TestPolyglot(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo runs 25 s")
	}
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(strings.TrimSuffix(strings.TrimSpace(string(root)), "/go.mod"))
	var out bytes.Buffer
	err = run(context.Background(), []string{"-duration", "25s"}, &out)
	t.Log(out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SIGKILL python-1", "SIGTERM hello-3", "no request failed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the output lacks %q", want)
		}
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{{"-duration", "5s"}, {"-rate", "0"}, {"extra"}} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
	if o, err := parseFlags(nil, &bytes.Buffer{}); err != nil || o.duration.Seconds() != 30 || o.rate != 100 {
		t.Errorf("defaults: %+v, %v", o, err)
	}
}
