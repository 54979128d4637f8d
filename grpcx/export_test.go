package grpcx

import "testing"

// SetMaxMethods lowers the method table's bound for one test.
func SetMaxMethods(tb testing.TB, n int) {
	old := maxMethods
	maxMethods = n
	tb.Cleanup(func() { maxMethods = old })
}
