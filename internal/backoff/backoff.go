package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Defaults used by a zero Policy.
const (
	DefaultBase = 100 * time.Millisecond
	DefaultMax  = 10 * time.Second
)

// Policy is a capped exponential backoff with full jitter: the delay before retry n (counting from 1)
// is uniform in [0, min(Max, Base·2^(n-1))). Full jitter spreads the retries of many clients that failed
// at the same moment, which is what keeps a recovering server from being hit by a synchronized wave.
//
// The zero value uses DefaultBase and DefaultMax. A Policy is a value and safe for concurrent use as long
// as Rand is.
type Policy struct {
	// Base is the ceiling of the first delay; 0 means DefaultBase.
	Base time.Duration
	// Max caps every delay; 0 means DefaultMax. A Max below Base is raised to Base.
	Max time.Duration
	// Rand returns a float in [0, 1); nil means math/rand/v2.Float64. Tests inject a fixed source.
	Rand func() float64
}

// Ceiling returns the upper bound of the delay before retry attempt (1-based). Attempts below 1 count as 1.
func (p Policy) Ceiling(attempt int) time.Duration {
	base, maxDelay := p.Base, p.Max
	if base <= 0 {
		base = DefaultBase
	}
	if maxDelay <= 0 {
		maxDelay = DefaultMax
	}
	if maxDelay < base {
		maxDelay = base
	}
	if attempt < 1 {
		attempt = 1
	}
	d := base
	// Doubling stops at the cap, so large attempt counts cannot overflow.
	for i := 1; i < attempt && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}

// Delay returns a jittered delay for retry attempt (1-based), uniform in [0, Ceiling(attempt)).
func (p Policy) Delay(attempt int) time.Duration {
	r := p.Rand
	if r == nil {
		r = rand.Float64
	}
	f := r()
	if f < 0 || f >= 1 {
		f = 0
	}
	return time.Duration(f * float64(p.Ceiling(attempt)))
}

// Sleep waits for d or until ctx is done, whichever comes first, and returns ctx's error in the
// second case. A non-positive d returns at once with ctx's error (nil while ctx is live).
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
