package policy

import (
	"context"
	"time"

	"github.com/failsafe-go/failsafe-go/bulkhead"
)

// Bulkhead caps concurrent calls, on failsafe-go's bulkhead permits used directly
// (TryAcquirePermit / AcquirePermitWithMaxWait / ReleasePermit): its executor allocates on every
// call for nothing used here.
type Bulkhead struct {
	bh   bulkhead.Bulkhead[any]
	wait time.Duration
}

// NewBulkhead returns a bulkhead admitting maxConcurrent calls; a call that finds it full waits up
// to wait for a slot (0: fails at once). maxConcurrent <= 0 returns nil (no limit).
func NewBulkhead(maxConcurrent int, wait time.Duration) *Bulkhead {
	if maxConcurrent <= 0 {
		return nil
	}
	return &Bulkhead{bh: bulkhead.NewBuilder[any](uint(maxConcurrent)).WithMaxWaitTime(wait).Build(), wait: wait}
}

// Acquire takes a permit, waiting up to the configured wait. It returns nil, ctx's error, or an error
// matching bulkhead.ErrFull. Each nil return must be paired with Release.
func (b *Bulkhead) Acquire(ctx context.Context) error {
	if b == nil || b.bh.TryAcquirePermit() {
		return nil
	}
	if b.wait > 0 {
		return b.bh.AcquirePermitWithMaxWait(ctx, b.wait)
	}
	return bulkhead.ErrFull
}

// Release returns a permit.
func (b *Bulkhead) Release() {
	if b != nil {
		b.bh.ReleasePermit()
	}
}
