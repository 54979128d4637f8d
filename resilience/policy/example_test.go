package policy_test

import (
	"context"
	"fmt"
	"time"

	"github.com/cloudchassis/kit/resilience/policy"
)

// A breaker opens after two failures in a row and refuses calls until its delay has passed.
func ExampleBreaker() {
	ctx := context.Background()
	b := policy.NewBreaker(policy.BreakerConfig{Failures: 2, Delay: time.Minute,
		OnTransition: func(_ context.Context, from, to policy.State) { fmt.Println(from, "->", to) }})
	for range 2 {
		if b.Allow(ctx) {
			b.Record(ctx, policy.Failure)
		}
	}
	fmt.Println("allowed:", b.Allow(ctx), "available:", b.Available())
	// Output:
	// closed -> open
	// allowed: false available: false
}
