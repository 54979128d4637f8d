package policy

import (
	"sync"
	"time"
)

const budgetBuckets = 10

// Budget bounds the extra load retries and hedges add to a dependency, in the manner of Finagle's and
// Linkerd's retry budgets: every call deposits Ratio of a token, every retry or hedge withdraws one,
// and MinPerSecond × Window tokens are always available so that low-traffic callers can still retry.
// Deposits and withdrawals expire after Window (a sliding window of 10 buckets), so the budget follows
// the recent traffic. With the defaults (0.2, 10/s, 10 s) a dependency that fails every call sees at
// most 1.2× its call rate plus 10 retries per second (averaged over the window).
//
// failsafe-go's budget package is not used: it limits the share of *concurrent* executions that are
// retries, which does not bound amplification against a dependency that fails fast (nothing stays in
// flight).
//
// A Budget is safe for concurrent use. Time comes from the injected clock (time.Now by default), so
// tests are deterministic under testing/synctest or with WithBudgetClock.
type Budget struct {
	ratio  float64
	floor  float64          // tokens per window from MinPerSecond
	width  int64            // bucket width in ns
	now    func() time.Time // nil: the real clock, read through start
	start  time.Time
	mu     sync.Mutex
	bucket [budgetBuckets]budgetBucket
}

type budgetBucket struct {
	epoch       int64 // bucket number since the Unix epoch; identifies stale buckets
	deposits    float64
	withdrawals float64
}

// BudgetOption configures a Budget.
type BudgetOption func(*Budget)

// WithBudgetClock replaces time.Now, for tests.
func WithBudgetClock(now func() time.Time) BudgetOption { return func(b *Budget) { b.now = now } }

// NewBudget returns a budget allowing ratio extra attempts per call plus minPerSecond per second over a
// sliding window. A window of 0 means 10s.
func NewBudget(ratio, minPerSecond float64, window time.Duration, opts ...BudgetOption) *Budget {
	if window <= 0 {
		window = 10 * time.Second
	}
	b := &Budget{
		ratio: ratio,
		floor: minPerSecond * window.Seconds(),
		width: max(int64(window)/budgetBuckets, 1),
		start: time.Now(),
	}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Deposit records one call (not a retry or hedge).
func (b *Budget) Deposit() {
	b.mu.Lock()
	b.current().deposits++
	b.mu.Unlock()
}

// TryWithdraw takes one token for a retry or hedge and reports whether there was one.
func (b *Budget) TryWithdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.current()
	if b.tokensLocked(cur.epoch) < 1 {
		return false
	}
	cur.withdrawals++
	return true
}

// Tokens returns the retries and hedges currently available.
func (b *Budget) Tokens() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tokensLocked(b.current().epoch)
}

func (b *Budget) tokensLocked(epoch int64) float64 {
	var dep, wd float64
	for i := range b.bucket {
		if bk := &b.bucket[i]; epoch-bk.epoch < budgetBuckets {
			dep += bk.deposits
			wd += bk.withdrawals
		}
	}
	return b.floor + b.ratio*dep - wd
}

// current returns the bucket for now, resetting it if it last held an older period. Needs b.mu.
func (b *Budget) current() *budgetBucket {
	var ns int64
	if b.now == nil {
		// Only the monotonic clock: half the cost of time.Now, which also reads the wall clock, and
		// Deposit runs on every call.
		ns = b.start.UnixNano() + int64(time.Since(b.start))
	} else {
		ns = b.now().UnixNano()
	}
	epoch := ns / b.width
	bk := &b.bucket[epoch%budgetBuckets]
	if bk.epoch != epoch {
		*bk = budgetBucket{epoch: epoch}
	}
	return bk
}
