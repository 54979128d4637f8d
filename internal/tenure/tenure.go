// Package tenure is the engine-neutral state of a distributed lock, shared by the Consul lock
// (coordination/lock) and the etcd one (coordination/etcdsync): a Tenure is one holding, from the
// session or lease that backs it to its release or loss; a Holder serializes Acquire, Release and
// Close and keeps the current Tenure. The engines differ in how they hold and watch a key, not in
// this bookkeeping.
package tenure

import (
	"context"
	"errors"
	"sync"
)

// Sentinel errors, re-exported by package lock.
var (
	ErrClosed  = errors.New("lock: closed")
	ErrHeld    = errors.New("lock: already held by this Lock")
	ErrNotHeld = errors.New("lock: not held")
	ErrLost    = errors.New("lock: lost")
)

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Tenure is one holding; D is the engine's data about it (a Consul session ID, an etcd lease). Its
// goroutines (renewer, monitor) are added to WG and stop when the context whose cancel was given to
// New is cancelled, which End does.
type Tenure[D any] struct {
	Data   D
	WG     sync.WaitGroup
	lost   chan struct{}
	cancel context.CancelFunc

	mu    sync.Mutex
	ended bool
	cause error // nil when released by the owner
	held  bool
	token uint64
}

// New returns a tenure whose End calls cancel.
func New[D any](data D, cancel context.CancelFunc) *Tenure[D] {
	return &Tenure[D]{Data: data, lost: make(chan struct{}), cancel: cancel}
}

// Lost is closed when the tenure ends.
func (t *Tenure[D]) Lost() <-chan struct{} { return t.lost }

// End closes Lost, records cause (nil: released) and cancels the tenure's goroutines; only the
// first call has an effect, and reports true.
func (t *Tenure[D]) End(cause error) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ended {
		return false
	}
	t.ended, t.cause = true, cause
	close(t.lost)
	t.cancel()
	return true
}

// Ended reports whether End was called.
func (t *Tenure[D]) Ended() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ended
}

// Cause is End's cause.
func (t *Tenure[D]) Cause() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cause
}

// Hold records that the key is held with token.
func (t *Tenure[D]) Hold(token uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.held, t.token = true, token
}

// State returns whether the key was ever held in this tenure, and with which token.
func (t *Tenure[D]) State() (held bool, token uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.held, t.token
}

// Holding returns the token while the key is held and the tenure has not ended.
func (t *Tenure[D]) Holding() (uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.token, t.held && !t.ended
}

// Holder is a lock's state between calls: a one-slot semaphore that serializes Acquire, Release
// and Close, the current tenure (held or lost; nil when idle) and whether it is closed.
type Holder[D any] struct {
	sem chan struct{}

	mu     sync.Mutex
	t      *Tenure[D]
	closed bool
}

// NewHolder returns an idle, open Holder.
func NewHolder[D any]() *Holder[D] { return &Holder[D]{sem: make(chan struct{}, 1)} }

// Enter takes the semaphore, or returns ctx's error.
func (h *Holder[D]) Enter(ctx context.Context) error {
	select {
	case h.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Leave gives the semaphore back.
func (h *Holder[D]) Leave() { <-h.sem }

// Begin starts an Acquire (within Enter): it fails with ErrClosed or ErrHeld, or takes the previous,
// lost tenure away (nil if none) for the caller to clean up.
func (h *Holder[D]) Begin() (old *Tenure[D], err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return nil, ErrClosed
	case h.t != nil:
		if _, held := h.t.Holding(); held {
			return nil, ErrHeld
		}
	}
	old, h.t = h.t, nil
	return old, nil
}

// Set makes t the current tenure.
func (h *Holder[D]) Set(t *Tenure[D]) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.t = t
}

// Current returns the current tenure, nil when idle.
func (h *Holder[D]) Current() *Tenure[D] {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.t
}

// Finish is an engine's end of a tenure, called by Release and Close after End: it stops the
// tenure's goroutines and gives the key up (releasing it, destroying the session or revoking the
// lease). released is false when the tenure had been lost before.
type Finish[D any] func(ctx context.Context, t *Tenure[D], released bool) error

// Release ends the current tenure as released by its owner and calls finish, within the semaphore.
// A loss before it is joined to finish's error; without a tenure it returns ErrNotHeld.
func (h *Holder[D]) Release(ctx context.Context, finish Finish[D]) error {
	if err := h.Enter(ctx); err != nil {
		return err
	}
	defer h.Leave()
	return h.release(ctx, finish)
}

func (h *Holder[D]) release(ctx context.Context, finish Finish[D]) error {
	h.mu.Lock()
	t := h.t
	h.t = nil
	h.mu.Unlock()
	if t == nil {
		return ErrNotHeld
	}
	released := t.End(nil)
	err := finish(ctx, t, released)
	if !released {
		err = errors.Join(t.Cause(), err)
	}
	return err
}

// Close marks the Holder closed and releases the current tenure, if any, within the semaphore and
// ctx. A loss before Close is not an error. It is idempotent; the caller first cancels what would
// keep a pending Acquire in the semaphore.
func (h *Holder[D]) Close(ctx context.Context, finish Finish[D]) error {
	if err := h.Enter(ctx); err != nil {
		return err
	}
	defer h.Leave()
	h.mu.Lock()
	was := h.closed
	h.closed = true
	idle := h.t == nil
	h.mu.Unlock()
	if was || idle {
		return nil
	}
	if err := h.release(ctx, finish); err != nil && !errors.Is(err, ErrLost) {
		return err
	}
	return nil
}

// Lost returns the current tenure's Lost channel, or a closed channel when idle.
func (h *Holder[D]) Lost() <-chan struct{} {
	if t := h.Current(); t != nil {
		return t.Lost()
	}
	return closedChan
}

// Err returns the current tenure's cause, nil when idle or not lost.
func (h *Holder[D]) Err() error {
	if t := h.Current(); t != nil {
		return t.Cause()
	}
	return nil
}

// Token returns the current tenure's token while it holds the key.
func (h *Holder[D]) Token() (uint64, bool) {
	if t := h.Current(); t != nil {
		return t.Holding()
	}
	return 0, false
}
