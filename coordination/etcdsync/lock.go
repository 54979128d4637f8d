package etcdsync

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudchassis/kit/coordination/lock"
	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/internal/lockmetrics"
	"github.com/cloudchassis/kit/internal/tenure"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Lock is a distributed mutual-exclusion lock on an etcd key prefix, with the semantics of
// lock.Lock: Acquire returns a lock.Token, Lost is closed and Err returns a *lock.LostError when
// the tenure ends, Release and Close give the key up, and the metrics have coordination/lock's names.
//
// Each tenure grants a lease and writes <key>/<lease in hex> under it; the contender whose key has
// the lowest CreateRevision under the prefix holds the lock (the algorithm of clientv3/concurrency's
// Mutex: each waiter watches only the key created just before its own, so a release wakes one
// waiter). The token is the holder key's CreateRevision, which strictly increases across holders.
//
// The Lock keeps the lease alive itself, every TTL/3, and gives the lock up at (send time of the
// last successful keep-alive + TTL - margin) by its own clock: before etcd can expire the lease and
// let another contender in, even when the holder is cut off from the quorum and hears nothing.
// Reads are linearizable and watches require a leader, so a member in a minority partition can
// neither grant nor confirm the lock.
//
// A Lock is safe for concurrent use; Acquire, Release and Close are serialized. Close stops every
// goroutine the Lock started. Use one Lock per contender.
type Lock struct {
	cli Client
	key string
	pfx string // key + "/"
	o   options
	m   lockmetrics.Metrics
	ttl int64 // seconds

	h    *tenure.Holder[lease] // serializes Acquire, Release and Close; the current tenure
	life context.Context       // cancelled by Close, to interrupt a blocked Acquire
	kill context.CancelFunc    // cancels life
}

// lease is what a tenure holds: an etcd lease and the contender's key under it.
type lease struct {
	id  clientv3.LeaseID
	key string
}

// tenureT is one lease's life, from its grant in Acquire to Release, Close or loss.
type tenureT = tenure.Tenure[lease]

// New returns a Lock on key (a prefix: the contenders' keys are created under key + "/"). Nothing
// is sent to etcd until Acquire. Options: WithTTL, WithMargin, WithValue, WithBackoff, WithLogger,
// WithMeterProvider.
func New(cli Client, key string, opts ...Option) (*Lock, error) {
	if cli == nil {
		return nil, errors.New("etcdsync: New: nil client")
	}
	if key == "" {
		return nil, errors.New("etcdsync: New: empty key")
	}
	o := newOptions(opts)
	switch {
	case o.ttl < MinTTL || o.ttl%time.Second != 0:
		return nil, fmt.Errorf("etcdsync: TTL %v: want whole seconds, at least %v", o.ttl, MinTTL)
	case o.margin <= 0 || o.margin > o.ttl/3:
		return nil, fmt.Errorf("etcdsync: margin %v: want more than 0 and at most TTL/3 (%v)", o.margin, o.ttl/3)
	}
	m, err := lockmetrics.New(o.Meters, key)
	if err != nil {
		return nil, fmt.Errorf("etcdsync: metrics: %w", err)
	}
	l := &Lock{cli: cli, key: key, pfx: key + "/", o: o, m: m, ttl: int64(o.ttl / time.Second), h: tenure.NewHolder[lease]()}
	l.life, l.kill = context.WithCancel(context.Background())
	return l, nil
}

// Key returns the locked key (the prefix of the contenders' keys).
func (l *Lock) Key() string { return l.key }

// Acquire blocks until this Lock holds the key or ctx is done, and returns the fencing token of this
// tenure. It grants a lease (kept alive until Release, Close or loss), queues its key under the
// prefix and waits, with linearizable reads and a watch, until every key created before it is gone.
// Failed calls are retried with backoff; a lease lost while waiting is replaced by a new one.
//
// When ctx ends first, the lease is revoked and ctx's error returned; after Close, lock.ErrClosed;
// while held, lock.ErrHeld. A tenure that was lost is cleaned up first, so Acquire after Lost is how
// to try again.
func (l *Lock) Acquire(ctx context.Context) (lock.Token, error) {
	if err := l.h.Enter(ctx); err != nil {
		return 0, err
	}
	defer l.h.Leave()
	old, err := l.h.Begin()
	if err != nil {
		return 0, err
	}
	if old != nil {
		l.finish(ctx, old)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(l.life, cancel)()
	start := time.Now()
	for {
		t, tctx, err := l.grant(ctx)
		if err != nil {
			return 0, l.abortErr(ctx, err)
		}
		tok, err := l.contend(ctx, tctx, t)
		if err == nil {
			l.m.Acquire(time.Since(start))
			l.h.Set(t)
			l.o.Logger.Info("lock acquired", "key", l.key, "token", uint64(tok), "lease", t.Data.key)
			return tok, nil
		}
		t.End(err)
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), lock.DefaultCleanupTimeout)
		l.finish(cctx, t)
		ccancel()
		if ctx.Err() != nil || !errors.Is(err, lock.ErrLost) {
			return 0, l.abortErr(ctx, err)
		}
		// The lease was lost while waiting: start over with a new one.
	}
}

func (l *Lock) abortErr(ctx context.Context, err error) error {
	if l.life.Err() != nil {
		return lock.ErrClosed
	}
	if ctx.Err() != nil {
		return fmt.Errorf("etcdsync: acquire %s: %w", l.key, context.Cause(ctx))
	}
	return err
}

// grant creates a lease, retrying with backoff, and starts its keeper.
func (l *Lock) grant(ctx context.Context) (*tenureT, context.Context, error) {
	for attempt := 1; ; attempt++ {
		sent := time.Now()
		g, err := l.cli.Grant(ctx, l.ttl)
		if err == nil {
			tctx, cancel := context.WithCancel(context.Background())
			t := tenure.New(lease{id: g.ID, key: l.pfx + strconv.FormatInt(int64(g.ID), 16)}, cancel)
			k := keeper{ttl: l.o.ttl, margin: l.o.margin, backoff: l.o.backoff,
				renew: func(ctx context.Context) (time.Duration, error) { return l.keepAlive(ctx, g.ID) },
				failed: func(err error, attempt int) {
					l.m.Failed(semconv.OperationRenewSession)
					l.o.Logger.Warn("etcdsync: keep-alive", "key", l.key, "lease", t.Data.key, "error", err, "attempt", attempt)
				}}
			deadline := sent.Add(min(time.Duration(g.TTL)*time.Second, l.o.ttl) - l.o.margin)
			t.WG.Go(func() {
				if lost := k.run(tctx, deadline); lost != nil {
					l.lose(t, lost)
				}
			})
			return t, tctx, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		l.m.Failed(semconv.OperationCreateSession)
		l.o.Logger.Warn("etcdsync: granting lease", "key", l.key, "error", err, "attempt", attempt)
		if err := backoff.Sleep(ctx, l.o.backoff.Delay(attempt)); err != nil {
			return nil, nil, err
		}
	}
}

// keepAlive sends one keep-alive and returns the TTL the server granted.
func (l *Lock) keepAlive(ctx context.Context, id clientv3.LeaseID) (time.Duration, error) {
	r, err := l.cli.KeepAliveOnce(ctx, id)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) || err == nil && r.TTL <= 0 {
		return 0, errLeaseGone
	}
	if err != nil {
		return 0, err
	}
	return time.Duration(r.TTL) * time.Second, nil
}

// contend queues the tenure's key and waits until it is the oldest under the prefix. A lease lost
// meanwhile ends the wait with the *lock.LostError.
func (l *Lock) contend(ctx, tctx context.Context, t *tenureT) (lock.Token, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(tctx, cancel)()
	var rev int64
	err := l.retry(ctx, t, semconv.OperationAcquire, func() error {
		// Create the key unless an earlier attempt did (its answer lost).
		r, err := l.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(t.Data.key), "=", 0)).
			Then(clientv3.OpPut(t.Data.key, string(l.o.value), clientv3.WithLease(t.Data.id))).
			Else(clientv3.OpGet(t.Data.key)).Commit()
		if err != nil {
			return err
		}
		rev = r.Header.Revision
		if !r.Succeeded {
			rev = r.Responses[0].GetResponseRange().Kvs[0].CreateRevision
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for {
		var prev *mvccpb.KeyValue
		var at int64
		err := l.retry(ctx, t, semconv.OperationRead, func() error {
			// The newest key created before ours (WithLastCreate reads the prefix).
			r, err := l.cli.Get(ctx, l.pfx, append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(rev-1))...)
			if err != nil {
				return err
			}
			prev, at = nil, r.Header.Revision
			if len(r.Kvs) > 0 {
				prev = r.Kvs[0]
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		if prev == nil {
			break
		}
		if err := l.waitDelete(ctx, t, string(prev.Key), at); err != nil {
			return 0, err
		}
	}
	// Every older key is gone. Ours must still be there: the lease may have expired meanwhile.
	err = l.retry(ctx, t, semconv.OperationRead, func() error {
		r, err := l.cli.Get(ctx, t.Data.key)
		if err != nil {
			return err
		}
		if len(r.Kvs) == 0 || r.Kvs[0].CreateRevision != rev {
			t.End(&lock.LostError{Key: l.key, Reason: lock.ReasonKeyLost, Detail: "the queued key " + t.Data.key + " disappeared while waiting"})
			return t.Cause()
		}
		t.Hold(uint64(rev))
		t.WG.Go(func() { l.monitor(tctx, t, r.Header.Revision) })
		return nil
	})
	return lock.Token(rev), err
}

// retry runs op until it succeeds, backing off after failures, until ctx ends or the tenure is lost.
func (l *Lock) retry(ctx context.Context, t *tenureT, operation string, op func() error) error {
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			return nil
		}
		if errors.Is(err, lock.ErrLost) {
			return err
		}
		if t.Ended() {
			return t.Cause()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		l.m.Failed(operation)
		l.o.Logger.Warn("etcdsync: "+operation, "key", l.key, "error", err, "attempt", attempt)
		if err := backoff.Sleep(ctx, l.o.backoff.Delay(attempt)); err != nil {
			if t.Ended() {
				return t.Cause()
			}
			return err
		}
	}
}

// waitDelete returns when key may have been deleted after revision at (the read that found it).
func (l *Lock) waitDelete(ctx context.Context, t *tenureT, key string, at int64) error {
	return l.retry(ctx, t, semconv.OperationRead, func() error {
		changed, err := watchChange(ctx, l.cli, key, at, 0, clientv3.WithFilterPut())
		if err == nil && !changed {
			err = errors.New("etcdsync: watch on " + key + " ended")
		}
		return err
	})
}

// monitor watches the held key and ends the tenure when it is deleted: the lease was revoked or
// expired at the server, or someone deleted the key. The keeper decides when an unreachable etcd
// means the lock is gone; ctx ends with the tenure.
func (l *Lock) monitor(ctx context.Context, t *tenureT, at int64) {
	_ = l.retry(ctx, t, semconv.OperationRead, func() error {
		for {
			changed, err := watchChange(ctx, l.cli, t.Data.key, at, 0, clientv3.WithFilterPut())
			if err == nil && !changed {
				err = errors.New("etcdsync: watch on " + t.Data.key + " ended")
			}
			if err != nil {
				return err
			}
			r, err := l.cli.Get(ctx, t.Data.key)
			if err != nil {
				return err
			}
			if len(r.Kvs) > 0 {
				at = r.Header.Revision // compacted history, the key still there
				continue
			}
			reason, detail := lock.ReasonKeyLost, "the key "+t.Data.key+" was deleted"
			if _, err := l.keepAlive(ctx, t.Data.id); errors.Is(err, errLeaseGone) {
				reason, detail = lock.ReasonSessionInvalidated, "etcd no longer knows the lease (revoked or expired)"
			}
			l.lose(t, &lock.LostError{Reason: reason, Detail: detail})
			return nil
		}
	}) // only the tenure's end stops the retries
}

// lose ends the tenure with err, filled in with the key and token; it logs and counts only the loss
// of a held lock.
func (l *Lock) lose(t *tenureT, err *lock.LostError) {
	held, tok := t.State()
	err.Key, err.Token = l.key, lock.Token(tok)
	if !t.End(err) || !held {
		return
	}
	l.m.End(err.Reason)
	l.o.Logger.Warn("lock lost", "key", l.key, "token", uint64(err.Token), "reason", err.Reason, "detail", err.Detail)
}

// finish waits for the ended tenure's goroutines and revokes its lease, which deletes its key at
// once. A failed revoke is logged: the lease then expires by itself after its TTL.
func (l *Lock) finish(ctx context.Context, t *tenureT) error {
	t.WG.Wait()
	if _, err := l.cli.Revoke(ctx, t.Data.id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		l.m.Failed(semconv.OperationDestroySession)
		l.o.Logger.Warn("etcdsync: revoking the lease; it will expire after its TTL", "key", l.key, "lease", t.Data.key, "error", err)
		return fmt.Errorf("etcdsync: revoke lease of %s: %w", t.Data.key, err)
	}
	return nil
}

// Release gives the key up by revoking the lease, so the next contender gets it at once. If the
// lock had been lost, Release cleans up and returns the *lock.LostError. Without a held or lost
// tenure it returns lock.ErrNotHeld.
func (l *Lock) Release(ctx context.Context) error { return l.h.Release(ctx, l.end) }

// end is the Lock's tenure.Finish.
func (l *Lock) end(ctx context.Context, t *tenureT, released bool) error {
	if released {
		l.m.End("")
	}
	err := l.finish(ctx, t)
	if released {
		_, tok := t.State()
		l.o.Logger.Info("lock released", "key", l.key, "token", tok)
	}
	return err
}

// Close interrupts a pending Acquire, releases the key if held and stops the Lock's goroutines,
// all within ctx. It fits a lifecycle stop hook. Close is idempotent; a loss before Close is not
// reported as an error. Calls after Close return lock.ErrClosed.
func (l *Lock) Close(ctx context.Context) error {
	l.kill()
	if err := l.h.Close(ctx, l.end); err != nil {
		return fmt.Errorf("etcdsync: close %s: %w", l.key, err)
	}
	return nil
}

// Lost returns a channel that is closed when the current tenure ends: the lock was lost (see Err)
// or released. Without a tenure it returns a closed channel. Take it after Acquire returns.
func (l *Lock) Lost() <-chan struct{} { return l.h.Lost() }

// Err returns the *lock.LostError of the current tenure once it was lost, and nil otherwise.
func (l *Lock) Err() error { return l.h.Err() }

// Token returns the fencing token while the lock is held.
func (l *Lock) Token() (lock.Token, bool) {
	tok, ok := l.h.Token()
	return lock.Token(tok), ok
}
