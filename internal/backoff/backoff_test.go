package backoff_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/internal/backoff"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCeiling(t *testing.T) {
	p := backoff.Policy{Base: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := p.Ceiling(i); got != w*time.Millisecond {
			t.Errorf("Ceiling(%d) = %v, want %v", i, got, w*time.Millisecond)
		}
	}
	if got := p.Ceiling(1 << 30); got != time.Second {
		t.Errorf("Ceiling(huge) = %v, want cap", got)
	}
}

func TestDefaultsAndOddValues(t *testing.T) {
	var p backoff.Policy
	if got := p.Ceiling(1); got != backoff.DefaultBase {
		t.Errorf("zero policy first ceiling = %v", got)
	}
	if got := p.Ceiling(100); got != backoff.DefaultMax {
		t.Errorf("zero policy cap = %v", got)
	}
	p = backoff.Policy{Base: time.Second, Max: time.Millisecond}
	if got := p.Ceiling(5); got != time.Second {
		t.Errorf("Max below Base: ceiling %v, want Base", got)
	}
}

func TestDelayFullJitter(t *testing.T) {
	for _, f := range []float64{0, 0.5, 0.999999, 1, -1} {
		p := backoff.Policy{Base: time.Second, Max: 8 * time.Second, Rand: func() float64 { return f }}
		d := p.Delay(3)
		if d < 0 || d >= 4*time.Second {
			t.Errorf("rand %v: delay %v outside [0, 4s)", f, d)
		}
	}
	p := backoff.Policy{Base: time.Second, Rand: func() float64 { return 0.5 }}
	if got := p.Delay(2); got != time.Second {
		t.Errorf("Delay(2) at 0.5 = %v, want 1s", got)
	}
	// The real source stays within bounds too.
	p = backoff.Policy{Base: time.Millisecond, Max: 4 * time.Millisecond}
	for range 1000 {
		if d := p.Delay(10); d < 0 || d >= 4*time.Millisecond {
			t.Fatalf("delay %v outside [0, 4ms)", d)
		}
	}
}

func ExamplePolicy() {
	p := backoff.Policy{Base: 250 * time.Millisecond, Max: 2 * time.Second}
	for attempt := 1; attempt <= 5; attempt++ {
		fmt.Println(attempt, p.Ceiling(attempt))
	}
	// Output:
	// 1 250ms
	// 2 500ms
	// 3 1s
	// 4 2s
	// 5 2s
}

func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if err := backoff.Sleep(context.Background(), time.Second); err != nil || time.Since(start) != time.Second {
			t.Fatalf("err %v after %v", err, time.Since(start))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start = time.Now()
		if err := backoff.Sleep(ctx, time.Hour); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 100*time.Millisecond {
			t.Fatalf("err %v after %v", err, time.Since(start))
		}
		if err := backoff.Sleep(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a done context with d=0: %v", err)
		}
		if err := backoff.Sleep(context.Background(), -time.Second); err != nil {
			t.Fatalf("negative d: %v", err)
		}
	})
}
