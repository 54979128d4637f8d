package telemetry_test

import (
	"fmt"
	"testing"
)

// testingT lets an Example use telemetrytest outside a test function.
type testingT struct {
	testing.TB
	cleanups []func()
}

func (t *testingT) Helper()                        {}
func (t *testingT) Cleanup(f func())               { t.cleanups = append(t.cleanups, f) }
func (t *testingT) Errorf(format string, a ...any) { fmt.Printf(format+"\n", a...) }
func (t *testingT) Fatalf(format string, a ...any) { panic(fmt.Sprintf(format, a...)) }
func (t *testingT) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}
