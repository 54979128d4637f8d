package etcdsync

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudchassis/kit/coordination/lock"
	"github.com/cloudchassis/kit/internal/backoff"
)

// errLeaseGone is what a renew function returns when etcd no longer knows the lease.
var errLeaseGone = errors.New("etcdsync: lease not found")

// keeper keeps a lease alive and decides, by the holder's own clock, when it must be considered
// lost. It is written against a renew function (one keep-alive round trip returning the TTL the
// server granted) so that its timing is tested with testing/synctest.
//
// The rule: a keep-alive sent at time s and answered reset the lease to expire at the server no
// earlier than s + TTL (the leader renews when it processes the request, after s; a new leader
// extends every lease when it takes over). So the holder is safe until s + TTL, and gives up at
// s + TTL - margin. Measuring from the send time, not from the answer as clientv3's KeepAlive does,
// is what makes the bound hold whatever the round trip took.
type keeper struct {
	ttl     time.Duration
	margin  time.Duration
	backoff backoff.Policy
	renew   func(ctx context.Context) (time.Duration, error)
	failed  func(err error, attempt int) // counts and logs a failed keep-alive
}

// run renews every TTL/3 until ctx ends (it returns nil) or the lease is lost: etcd no longer
// knows it, or deadline passed without a successful keep-alive. deadline is the local expiry of
// the lease's grant (its send time + TTL - margin).
func (k keeper) run(ctx context.Context, deadline time.Time) *lock.LostError {
	wait := k.ttl / 3
	failures := 0
	for {
		if err := backoff.Sleep(ctx, min(wait, time.Until(deadline))); err != nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return &lock.LostError{Reason: lock.ReasonRenewTimeout,
				Detail: fmt.Sprintf("no keep-alive succeeded in time; the lease may expire at the server within %v", k.margin)}
		}
		sent := time.Now()
		rctx, cancel := context.WithDeadline(ctx, deadline)
		ttl, err := k.renew(rctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errLeaseGone):
			return &lock.LostError{Reason: lock.ReasonSessionInvalidated, Detail: "etcd no longer knows the lease (revoked or expired)"}
		case err != nil:
			failures++
			k.failed(err, failures)
			wait = min(k.backoff.Delay(failures), k.ttl/6)
			continue
		}
		failures, wait = 0, k.ttl/3
		deadline = sent.Add(min(ttl, k.ttl) - k.margin)
	}
}
