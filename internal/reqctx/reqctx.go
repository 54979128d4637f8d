// Package reqctx is the context layer the servers put on every request (HTTP in chassis, gRPC in
// grpcx): it carries the request id and a lazy deadline.
package reqctx

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Context is the context layer a server puts on every request: it carries the request id (when it
// is not the trace id) under the server's own key, and the request deadline (over HTTP the caller's
// Chassis-Timeout-Ms capped by HTTP_REQUEST_TIMEOUT; over gRPC the caller's deadline capped by
// GRPC_REQUEST_TIMEOUT).
//
// The deadline is lazy. context.WithTimeout costs every request a timer, a cancel context, its
// registration in the parent's children map and the cancel: four allocations and about a
// microsecond (BENCHMARKS.md, issue 15), although most handlers never wait on Done. Context
// answers Deadline at once, decides Err by the clock, and makes the real context.WithDeadline only
// when something calls Done (a select, an outgoing call, a child context) or asks for the context
// package's own key (context.Cause). Err is frozen at its first non-nil answer, as the Context
// contract requires, and the real context, when made later, reports the same error.
type Context struct {
	parent   context.Context
	idKey    any       // the key under which Value answers id
	id       string    // the request id when the caller sent one or it is random; "" when it is the trace id
	deadline time.Time // zero: no deadline of ours (none set, or the parent's is earlier)

	done atomic.Pointer[<-chan struct{}] // the real context's Done, once made

	mu       sync.Mutex
	real     context.Context // made on first need; nil until then
	cancel   context.CancelFunc
	err      error // the frozen answer of Err, nil until the context is done
	released bool  // the request ended (release ran) before real was made
}

// Init sets the parent, the request id (answered by Value(idKey) when not "") and the deadline:
// now+d, unless the parent's deadline is earlier. d <= 0 sets none. Call it once, before use.
func (c *Context) Init(parent context.Context, idKey any, id string, now time.Time, d time.Duration) {
	c.parent, c.idKey, c.id = parent, idKey, id
	if d <= 0 {
		return
	}
	dl := now.Add(d)
	if pd, ok := parent.Deadline(); ok && !dl.Before(pd) {
		return
	}
	c.deadline = dl
}

func (c *Context) Deadline() (time.Time, bool) {
	if c.deadline.IsZero() {
		return c.parent.Deadline()
	}
	return c.deadline, true
}

func (c *Context) Done() <-chan struct{} {
	if c.deadline.IsZero() {
		return c.parent.Done()
	}
	if d := c.done.Load(); d != nil {
		return *d
	}
	return c.materialize().Done()
}

func (c *Context) Err() error {
	if c.deadline.IsZero() {
		return c.parent.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.settleLocked()
	return c.err
}

// settleLocked freezes err once the context is done: by the real context when it exists, else by
// the parent, the clock, or the end of the request.
func (c *Context) settleLocked() {
	switch {
	case c.err != nil:
	case c.real != nil:
		c.err = c.real.Err()
	case !time.Now().Before(c.deadline):
		// Checked before the parent: had a timer been armed, it would have fired at the deadline,
		// whatever the parent did since. (When the parent was cancelled before the deadline and
		// nothing watched either, this says DeadlineExceeded where a timer would have said
		// Canceled: the one difference, and a true statement still.)
		c.err = context.DeadlineExceeded
	case c.parent.Err() != nil:
		c.err = c.parent.Err()
	case c.released:
		c.err = context.Canceled
	}
}

func (c *Context) Value(key any) any {
	if c.id != "" && key == c.idKey {
		return c.id
	}
	switch key.(type) {
	case *int:
		// The context package keys its cancel contexts with an *int (cancelCtxKey): child contexts
		// and context.Cause ask for it, and must see the real one, made now.
		if !c.deadline.IsZero() {
			return c.materialize().Value(key)
		}
	}
	return c.parent.Value(key)
}

// materialize makes the real context once. When Err already froze an answer, the real context is
// made done with that same error, so that Done, Err and Cause agree.
func (c *Context) materialize() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.real != nil {
		return c.real
	}
	c.settleLocked()
	switch c.err {
	case nil:
		c.real, c.cancel = context.WithDeadline(c.parent, c.deadline)
	case context.DeadlineExceeded: // past deadline: done at once, whatever the parent does later
		c.real, c.cancel = context.WithDeadline(context.WithoutCancel(c.parent), c.deadline)
	default:
		if c.parent.Err() == c.err { // the parent's error, with its cause
			c.real, c.cancel = context.WithCancel(c.parent)
		} else { // the request ended
			c.real, c.cancel = context.WithCancel(context.WithoutCancel(c.parent))
			c.cancel()
		}
	}
	d := c.real.Done()
	c.done.Store(&d)
	return c.real
}

// Release ends the request's context, as the cancel of context.WithTimeout does: a goroutine the
// handler left behind sees Done closed and Err non-nil.
func (c *Context) Release() {
	if c.deadline.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.real != nil {
		c.cancel()
		return
	}
	c.released = true
	c.settleLocked()
}

func (c *Context) String() string { return "chassis.requestContext" }
