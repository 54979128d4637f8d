package resilience

import (
	"context"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/cloudchassis/kit/resilience/policy"
)

// BenchmarkBreaker compares a closed breaker's bookkeeping for one successful call through the
// permit API this package uses (AllowContext + RecordContext, with the span-event bookkeeping) with
// failsafe-go's executor running the same state machine.
//
//	go test -run '^$' -bench Breaker -benchmem ./resilience/
func BenchmarkBreaker(b *testing.B) {
	b.Run("permit", func(b *testing.B) {
		br := newTestBreaker(policy.BreakerConfig{Failures: 5, Delay: time.Second}, "a")
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := br.AllowContext(ctx); err != nil {
				b.Fatal(err)
			}
			br.RecordContext(ctx, policy.Success)
		}
	})
	b.Run("failsafe-executor", func(b *testing.B) {
		cb := circuitbreaker.NewBuilder[any]().WithFailureThreshold(5).WithDelay(time.Second).Build()
		exec := failsafe.With[any](cb)
		fn := func() (any, error) { return nil, nil }
		b.ReportAllocs()
		for b.Loop() {
			if _, err := exec.Get(fn); err != nil {
				b.Fatal(err)
			}
		}
	})
}
