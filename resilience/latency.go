package resilience

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Latency histogram: 64 exponential buckets from 100 µs growing by 25% (up to ~2 minutes), counted
// over a sliding window made of the current and the previous period.
const (
	latBuckets    = 64
	latBase       = float64(100 * time.Microsecond)
	latGrowth     = 1.25
	latPeriod     = 5 * time.Second
	latMinSamples = 50 // below this, the estimate is not trusted and the fixed delay applies
	latRecompute  = 32 // recompute the percentile every this many samples
)

var logGrowth = math.Log(latGrowth)

// latencyTracker estimates a latency percentile of recent attempts. Safe for concurrent use; Estimate
// is lock-free.
type latencyTracker struct {
	q      float64
	mu     sync.Mutex
	start  time.Time
	cur    [latBuckets]uint32
	prev   [latBuckets]uint32
	since  int
	cached atomic.Int64 // estimate in ns; 0 = not enough samples
}

func newLatencyTracker(q float64) *latencyTracker { return &latencyTracker{q: q} }

func latIndex(d time.Duration) int {
	if float64(d) <= latBase {
		return 0
	}
	return min(int(math.Log(float64(d)/latBase)/logGrowth)+1, latBuckets-1)
}

// latUpper is the upper bound of bucket i: estimates round up, so hedges fire a bit late, never early.
func latUpper(i int) time.Duration { return time.Duration(latBase * math.Pow(latGrowth, float64(i))) }

func (t *latencyTracker) Record(d time.Duration) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if el := now.Sub(t.start); el >= latPeriod {
		if el >= 2*latPeriod {
			t.prev = [latBuckets]uint32{}
		} else {
			t.prev = t.cur
		}
		t.cur = [latBuckets]uint32{}
		t.start = now
		t.since = latRecompute // recompute after rotation
	}
	t.cur[latIndex(d)]++
	t.since++
	if t.since >= latRecompute {
		t.since = 0
		t.cached.Store(int64(t.percentileLocked()))
	}
}

func (t *latencyTracker) percentileLocked() time.Duration {
	var total uint64
	for i := range t.cur {
		total += uint64(t.cur[i]) + uint64(t.prev[i])
	}
	if total < latMinSamples {
		return 0
	}
	rank := uint64(math.Ceil(t.q * float64(total)))
	var seen uint64
	for i := range t.cur {
		seen += uint64(t.cur[i]) + uint64(t.prev[i])
		if seen >= rank {
			return latUpper(i)
		}
	}
	return latUpper(latBuckets - 1)
}

// Estimate returns the last computed percentile, 0 if there were too few samples.
func (t *latencyTracker) Estimate() time.Duration { return time.Duration(t.cached.Load()) }
