package kitendpoint_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-kit/kit/endpoint"
	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/resilience"
	"github.com/cloudchassis/kit/resilience/kitendpoint"
	"github.com/cloudchassis/kit/resilience/policy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errDown = errors.New("down")

func failing(n *int) endpoint.Endpoint {
	return func(ctx context.Context, req any) (any, error) { *n++; return nil, errDown }
}

func TestRetryBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n int
		b := policy.NewBudget(0.2, 0, 10*time.Second)
		ep := kitendpoint.Retry(3, 10*time.Millisecond, time.Second, b, nil)(failing(&n))
		for range 100 {
			if _, err := ep(t.Context(), nil); !errors.Is(err, errDown) {
				t.Fatal(err)
			}
		}
		if n > 120 {
			t.Fatalf("%d attempts for 100 calls: budget not enforced", n)
		}
	})
}

func TestBreakerIgnoresCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		br := policy.NewBreaker(policy.BreakerConfig{Failures: 2, Delay: time.Second})
		ep := kitendpoint.Breaker(br)(func(ctx context.Context, req any) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		})
		for range 5 {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			_, _ = ep(ctx, nil)
		}
		var n int
		ep = kitendpoint.Breaker(br)(failing(&n))
		_, _ = ep(t.Context(), nil)
		_, _ = ep(t.Context(), nil)
		if _, err := ep(t.Context(), nil); !errors.Is(err, resilience.ErrBreakerOpen) || n != 2 {
			t.Fatalf("err %v after %d calls: cancellations counted or failures not", err, n)
		}
	})
}

func TestTimeoutAndBulkhead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := func(ctx context.Context, req any) (any, error) {
			select {
			case <-time.After(time.Hour):
				return "late", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		_, err := kitendpoint.Timeout(time.Second)(slow)(t.Context(), nil)
		if !errors.Is(err, resilience.ErrTimeout) {
			t.Fatal(err)
		}
		bh := policy.NewBulkhead(1, 0)
		ep := kitendpoint.Bulkhead(bh)(kitendpoint.Timeout(time.Second)(slow))
		go func() { _, _ = ep(t.Context(), nil) }()
		synctest.Wait()
		if _, err := ep(t.Context(), nil); !errors.Is(err, resilience.ErrBulkheadFull) {
			t.Fatalf("got %v, want ErrBulkheadFull", err)
		}
	})
}

// A go-kit client endpoint with the full set: timeout per attempt, breaker, budgeted retries.
func Example() {
	calls := 0
	flaky := func(ctx context.Context, req any) (any, error) {
		if calls++; calls < 3 {
			return nil, errDown
		}
		return "hello " + req.(string), nil
	}
	budget := policy.NewBudget(0.2, 10, 10*time.Second)
	breaker := policy.NewBreaker(policy.BreakerConfig{Failures: 5, Delay: 5 * time.Second})
	ep := endpoint.Chain(
		kitendpoint.Retry(3, time.Millisecond, 10*time.Millisecond, budget, nil),
		kitendpoint.Breaker(breaker),
		kitendpoint.Timeout(time.Second),
	)(flaky)
	resp, err := ep(context.Background(), "kit")
	fmt.Println(resp, err, calls)
	// Output: hello kit <nil> 3
}
