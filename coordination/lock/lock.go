package lock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/internal/lockmetrics"
	"github.com/cloudchassis/kit/internal/tenure"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Token is a fencing token: the Consul raft index at which this holder's acquisition was committed
// (the key's ModifyIndex read back, with a consistent read, right after the acquire). Tokens of
// successive holders of one key strictly increase, so a resource that remembers the highest token it
// has seen and rejects lower ones cannot be written by a holder that has lost the lock without
// knowing it (a paused process, a partitioned node).
//
// Why not the key's LockIndex: it counts acquisitions of the key and restarts when the key is
// deleted (BehaviorDelete, or an operator's `consul kv delete`), so a new holder could get a smaller
// LockIndex than an old one. The raft index never goes backwards in a cluster's life.
type Token uint64

// String returns the token in decimal, for headers and logs.
func (t Token) String() string { return strconv.FormatUint(uint64(t), 10) }

// Sentinel errors.
var (
	// ErrClosed is returned by calls on a Lock after Close.
	ErrClosed = tenure.ErrClosed
	// ErrHeld is returned by Acquire when this Lock already holds the key.
	ErrHeld = tenure.ErrHeld
	// ErrNotHeld is returned by Release when this Lock neither holds nor has lost the key.
	ErrNotHeld = tenure.ErrNotHeld
	// ErrLost matches every *LostError.
	ErrLost = tenure.ErrLost
)

// Reasons for a loss, in LostError.Reason and the semconv.AttrLockReason attribute of
// semconv.MetricLockLosses. They are the scheme's values (docs/telemetry.md), named here too because
// callers match LostError.Reason against them.
const (
	// ReasonSessionInvalidated: Consul no longer knows the session (TTL expired server-side, node
	// health check failed, or someone destroyed it).
	ReasonSessionInvalidated = semconv.ReasonSessionInvalidated
	// ReasonRenewTimeout: no renewal succeeded for a whole TTL, so Consul may have expired the
	// session; the Lock gives up before a new holder can possibly have the key.
	ReasonRenewTimeout = semconv.ReasonRenewTimeout
	// ReasonKeyLost: the key was deleted, released or taken by another session while the session lived.
	ReasonKeyLost = semconv.ReasonKeyLost
)

// LostError says why a held lock was lost. It matches ErrLost with errors.Is.
type LostError struct {
	Key    string
	Token  Token  // the token of the lost tenure
	Reason string // one of the Reason constants
	Detail string
}

func (e *LostError) Error() string {
	return fmt.Sprintf("lock %q (token %d) lost: %s: %s", e.Key, e.Token, e.Reason, e.Detail)
}

// Is makes errors.Is(err, ErrLost) true.
func (e *LostError) Is(target error) bool { return target == ErrLost }

// Lock is a distributed mutual-exclusion lock on one Consul key, held through a session with a TTL
// that the Lock renews in the background while it holds (or waits for) the key.
//
// Lock state is always read with consistent reads (?consistent): the answer comes from the raft
// leader after it has confirmed its leadership with a quorum, so a server cut off in a minority
// partition cannot report a stale holder. Acquire and Release are raft writes and need a quorum too:
// a minority partition can neither acquire nor keep the lock.
//
// A Lock is safe for concurrent use; Acquire, Release and Close are serialized. Close stops every
// goroutine the Lock started. One Lock holds the key at most once at a time: use one Lock per
// contender.
type Lock struct {
	c   Client
	key string
	o   options
	m   lockmetrics.Metrics

	h    *tenure.Holder[string] // serializes Acquire, Release and Close; the current tenure
	life context.Context        // cancelled by Close, to interrupt a blocked Acquire
	kill context.CancelFunc     // cancels life
}

// tenureT is one session's life, from its creation in Acquire to Release, Close or loss; its Data is
// the session ID.
type tenureT = tenure.Tenure[string]

// New returns a Lock on key. Nothing is sent to Consul until Acquire. Options: WithTTL,
// WithLockDelay, WithBehavior, WithValue, WithSessionName, WithRetryWait, WithWaitTime,
// WithBackoff, WithLogger, WithMeterProvider.
func New(c Client, key string, opts ...Option) (*Lock, error) {
	if c == nil {
		return nil, errors.New("lock: New: nil Client")
	}
	if key == "" {
		return nil, errors.New("lock: New: empty key")
	}
	o := newOptions(opts)
	switch {
	case o.ttl < MinTTL || o.ttl > MaxTTL:
		return nil, fmt.Errorf("lock: TTL %v: Consul accepts %v to %v", o.ttl, MinTTL, MaxTTL)
	case o.lockDelay < time.Millisecond:
		return nil, fmt.Errorf("lock: lock-delay %v: must be at least 1ms (Consul reads 0 as its 15s default)", o.lockDelay)
	case o.behavior != BehaviorRelease && o.behavior != BehaviorDelete:
		return nil, fmt.Errorf("lock: behavior %q: want %q or %q", o.behavior, BehaviorRelease, BehaviorDelete)
	case o.retryWait <= 0 || o.waitTime <= 0:
		return nil, errors.New("lock: retry wait and wait time must be positive")
	}
	if o.name == "" {
		o.name = "lock " + key
	}
	m, err := lockmetrics.New(o.Meters, key)
	if err != nil {
		return nil, fmt.Errorf("lock: metrics: %w", err)
	}
	l := &Lock{c: c, key: key, o: o, m: m, h: tenure.NewHolder[string]()}
	l.life, l.kill = context.WithCancel(context.Background())
	return l, nil
}

// Key returns the locked key.
func (l *Lock) Key() string { return l.key }

// Acquire blocks until this Lock holds the key or ctx is done, and returns the fencing token of this
// tenure. It creates a session (renewed until Release, Close or loss), waits with consistent blocking
// queries while another session holds the key, and retries after DefaultRetryWait while lock-delay
// keeps a free key from being taken. Failed calls are retried with backoff.
//
// When ctx ends first, the session is destroyed and ctx's error returned; after Close, ErrClosed. A
// tenure that was lost is cleaned up first, so Acquire after Lost is how to try again.
func (l *Lock) Acquire(ctx context.Context) (Token, error) {
	if err := l.h.Enter(ctx); err != nil {
		return 0, err
	}
	defer l.h.Leave()
	old, err := l.h.Begin()
	if err != nil {
		return 0, err
	}
	if old != nil {
		old.WG.Wait()
		l.cleanup(ctx, old, false)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(l.life, cancel)()
	start := time.Now()
	for {
		t, tctx, err := l.newTenure(ctx)
		if err != nil {
			return 0, l.abortErr(ctx, err)
		}
		tok, err := l.contend(ctx, tctx, t)
		if err == nil {
			l.m.Acquire(time.Since(start))
			l.h.Set(t)
			l.o.Logger.Info("lock acquired", "key", l.key, "token", uint64(tok), "session", t.Data)
			return tok, nil
		}
		t.End(err)
		t.WG.Wait()
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultCleanupTimeout)
		// The acquire may have been committed although its answer never arrived: release to be sure.
		l.cleanup(cctx, t, true)
		ccancel()
		if ctx.Err() != nil || !errors.Is(err, errSessionEnded) {
			return 0, l.abortErr(ctx, err)
		}
		// The session died while waiting (renewals failed for a TTL): start over with a new one.
	}
}

var errSessionEnded = errors.New("lock: session ended while acquiring")

func (l *Lock) abortErr(ctx context.Context, err error) error {
	if l.life.Err() != nil {
		return ErrClosed
	}
	if ctx.Err() != nil {
		return fmt.Errorf("lock: acquire %s: %w", l.key, context.Cause(ctx))
	}
	return err
}

// newTenure creates a session, retrying with backoff, and starts its renewer.
func (l *Lock) newTenure(ctx context.Context) (*tenureT, context.Context, error) {
	se := &api.SessionEntry{
		Name:      l.o.name,
		TTL:       l.o.ttl.String(),
		LockDelay: l.o.lockDelay,
		Behavior:  string(l.o.behavior),
	}
	for attempt := 1; ; attempt++ {
		start := time.Now()
		id, err := l.c.CreateSession(ctx, se)
		if err == nil {
			tctx, cancel := context.WithCancel(context.Background())
			t := tenure.New(id, cancel)
			t.WG.Go(func() { l.renew(tctx, t, start) })
			return t, tctx, nil
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		l.m.Failed(semconv.OperationCreateSession)
		l.o.Logger.Warn("lock: creating session", "key", l.key, "error", err, "attempt", attempt)
		if err := backoff.Sleep(ctx, l.o.backoff.Delay(attempt)); err != nil {
			return nil, nil, err
		}
	}
}

// contend loops until the tenure's session holds the key. Reads are consistent; while another session
// holds the key they are blocking queries, so waiting costs one request per change or wait time.
func (l *Lock) contend(ctx, tctx context.Context, t *tenureT) (Token, error) {
	// The tenure ending (its session died) interrupts a blocking query at once.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(tctx, cancel)()
	var index uint64
	var last time.Time
	failures := 0
	for {
		if t.Ended() {
			return 0, errSessionEnded
		}
		if err := l.pace(ctx, index, &last); err != nil {
			return 0, l.contendErr(ctx, t, err)
		}
		p, meta, err := l.c.Get(ctx, l.key, &api.QueryOptions{RequireConsistent: true, WaitIndex: index, WaitTime: l.o.waitTime})
		if err != nil {
			if ctx.Err() != nil {
				return 0, l.contendErr(ctx, t, ctx.Err())
			}
			failures++
			l.m.Failed(semconv.OperationRead)
			l.o.Logger.Warn("lock: reading key", "key", l.key, "error", err, "attempt", failures)
			if err := backoff.Sleep(ctx, l.o.backoff.Delay(failures)); err != nil {
				return 0, l.contendErr(ctx, t, err)
			}
			continue
		}
		failures = 0
		switch {
		case p != nil && p.Session == t.Data:
			tok := Token(p.ModifyIndex)
			t.Hold(uint64(tok))
			t.WG.Go(func() { l.monitor(tctx, t, meta.LastIndex) })
			return tok, nil
		case p == nil || p.Session == "":
			ok, err := l.c.Acquire(ctx, &api.KVPair{Key: l.key, Value: l.o.value, Session: t.Data})
			index = 0 // read back at once: the read confirms the hold and gives the token
			if err != nil {
				if ctx.Err() != nil {
					return 0, l.contendErr(ctx, t, ctx.Err())
				}
				failures++
				l.m.Failed(semconv.OperationAcquire)
				l.o.Logger.Warn("lock: acquire", "key", l.key, "error", err, "attempt", failures)
				if err := backoff.Sleep(ctx, l.o.backoff.Delay(failures)); err != nil {
					return 0, l.contendErr(ctx, t, err)
				}
				continue
			}
			if !ok {
				// Free but refused: lock-delay after the previous holder's session was invalidated,
				// or another contender was faster.
				if err := backoff.Sleep(ctx, l.o.retryWait); err != nil {
					return 0, l.contendErr(ctx, t, err)
				}
			}
		default:
			index = nextIndex(index, meta.LastIndex)
		}
	}
}

// contendErr tells a session that died (try again with a new one) from the caller giving up.
func (l *Lock) contendErr(ctx context.Context, t *tenureT, err error) error {
	if t.Ended() && ctx.Err() != nil {
		return errSessionEnded
	}
	return err
}

// renew keeps the session alive every TTL/2 and ends the tenure when Consul no longer knows the
// session, or when no renewal has succeeded for a whole TTL: from then on Consul may have expired it,
// and a new holder may have the key once lock-delay has passed.
func (l *Lock) renew(ctx context.Context, t *tenureT, last time.Time) {
	wait := l.o.ttl / 2
	failures := 0
	for {
		deadline := last.Add(l.o.ttl)
		if err := backoff.Sleep(ctx, min(wait, time.Until(deadline))); err != nil {
			return
		}
		if !time.Now().Before(deadline) {
			l.lose(t, ReasonRenewTimeout, fmt.Sprintf("no session renewal succeeded for %v (last error counted in %s)", l.o.ttl, semconv.MetricLockErrors))
			return
		}
		start := time.Now()
		rctx, cancel := context.WithDeadline(ctx, deadline)
		se, err := l.c.RenewSession(rctx, t.Data)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failures++
			l.m.Failed(semconv.OperationRenewSession)
			l.o.Logger.Warn("lock: renewing session", "key", l.key, "session", t.Data, "error", err, "attempt", failures)
			wait = min(l.o.backoff.Delay(failures), l.o.ttl/4)
			continue
		case se == nil:
			l.lose(t, ReasonSessionInvalidated, "Consul no longer knows session "+t.Data)
			return
		}
		failures, last, wait = 0, start, l.o.ttl/2
	}
}

// monitor watches the held key and ends the tenure when another session holds it, or nobody does.
func (l *Lock) monitor(ctx context.Context, t *tenureT, index uint64) {
	var last time.Time
	failures := 0
	for {
		if err := l.pace(ctx, index, &last); err != nil {
			return
		}
		p, meta, err := l.c.Get(ctx, l.key, &api.QueryOptions{RequireConsistent: true, WaitIndex: index, WaitTime: l.o.waitTime})
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// The renewer decides when an unreachable Consul means the lock is gone.
			failures++
			l.m.Failed(semconv.OperationRead)
			l.o.Logger.Warn("lock: watching key", "key", l.key, "error", err, "attempt", failures)
			if backoff.Sleep(ctx, l.o.backoff.Delay(failures)) != nil {
				return
			}
			continue
		}
		failures = 0
		if p != nil && p.Session == t.Data {
			index = nextIndex(index, meta.LastIndex)
			continue
		}
		reason, detail := ReasonKeyLost, "the key was deleted"
		if p != nil {
			detail = "the key is held by session " + strconv.Quote(p.Session)
			if p.Session == "" {
				detail = "the key has no holder"
				// Most often Consul invalidated the session (BehaviorRelease clears the holder).
				rctx, cancel := context.WithTimeout(ctx, l.o.ttl/2)
				se, err := l.c.RenewSession(rctx, t.Data)
				cancel()
				if err == nil && se == nil {
					reason, detail = ReasonSessionInvalidated, "Consul no longer knows session "+t.Data
				}
			}
		}
		l.lose(t, reason, detail)
		return
	}
}

// lose ends the tenure with a LostError; it logs and counts only a loss of a held lock.
func (l *Lock) lose(t *tenureT, reason, detail string) {
	held, tok := t.State()
	err := &LostError{Key: l.key, Token: Token(tok), Reason: reason, Detail: detail}
	if !t.End(err) || !held {
		return
	}
	l.m.End(reason)
	l.o.Logger.Warn("lock lost", "key", l.key, "token", uint64(tok), "reason", reason, "detail", detail)
}

// cleanup releases the key (when asked) and destroys the session, logging failures: the session
// then expires by itself after its TTL.
func (l *Lock) cleanup(ctx context.Context, t *tenureT, release bool) error {
	var errs []error
	if release {
		if _, err := l.c.Release(ctx, &api.KVPair{Key: l.key, Value: l.o.value, Session: t.Data}); err != nil {
			l.m.Failed(semconv.OperationRelease)
			errs = append(errs, fmt.Errorf("lock: release %s: %w", l.key, err))
		}
	}
	if err := l.c.DestroySession(ctx, t.Data); err != nil {
		l.m.Failed(semconv.OperationDestroySession)
		errs = append(errs, fmt.Errorf("lock: destroy session %s: %w", t.Data, err))
	}
	err := errors.Join(errs...)
	if err != nil {
		l.o.Logger.Warn("lock: cleanup; the session will expire after its TTL", "key", l.key, "error", err)
	}
	return err
}

// Release gives the key up and destroys the session. An explicit release does not trigger
// lock-delay, so the next contender gets the key at once. If the lock had been lost, Release cleans
// up and returns the *LostError. Without a held or lost tenure it returns ErrNotHeld.
func (l *Lock) Release(ctx context.Context) error { return l.h.Release(ctx, l.end) }

// end is the Lock's tenure.Finish.
func (l *Lock) end(ctx context.Context, t *tenureT, released bool) error {
	if released {
		l.m.End("")
	}
	t.WG.Wait()
	err := l.cleanup(ctx, t, released)
	if released {
		_, tok := t.State()
		l.o.Logger.Info("lock released", "key", l.key, "token", tok)
	}
	return err
}

// Close interrupts a pending Acquire, releases the key if held, destroys the session and stops the
// Lock's goroutines, all within ctx. It fits a lifecycle stop hook. Close is idempotent; a loss before Close is not
// reported as an error. Calls after Close return ErrClosed.
func (l *Lock) Close(ctx context.Context) error {
	l.kill()
	if err := l.h.Close(ctx, l.end); err != nil {
		return fmt.Errorf("lock: close %s: %w", l.key, err)
	}
	return nil
}

// Lost returns a channel that is closed when the current tenure ends: the lock was lost (see Err)
// or released. Without a tenure it returns a closed channel. Take it after Acquire returns.
func (l *Lock) Lost() <-chan struct{} { return l.h.Lost() }

// Err returns the *LostError of the current tenure once it was lost, and nil otherwise.
func (l *Lock) Err() error { return l.h.Err() }

// Token returns the fencing token while the lock is held.
func (l *Lock) Token() (Token, bool) {
	tok, ok := l.h.Token()
	return Token(tok), ok
}

// pace keeps successive blocking queries at least DefaultMinInterval apart.
func (l *Lock) pace(ctx context.Context, index uint64, last *time.Time) error {
	if index != 0 && !last.IsZero() {
		if err := backoff.Sleep(ctx, l.o.minInterval-time.Since(*last)); err != nil {
			return err
		}
	}
	*last = time.Now()
	return nil
}

// nextIndex follows Consul's rules for blocking queries: an index that went backwards (a snapshot
// restore, a new cluster) resets to 0, and 0 is never used as a wait index after a read.
func nextIndex(prev, got uint64) uint64 {
	switch {
	case got < prev:
		return 0
	case got == 0:
		return 1
	}
	return got
}
