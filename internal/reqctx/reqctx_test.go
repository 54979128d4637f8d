package reqctx

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type idKey struct{}

// The lazy request context must be indistinguishable from context.WithTimeout: every scenario runs
// against both, and each observation (Deadline, Err, Cause, Done) must agree at every step. (The
// one documented difference, a parent cancelled before the deadline with nothing watching until
// after it, is TestRequestCtxUnobservedParentCancel.)
func TestRequestCtxBehavesLikeWithTimeout(t *testing.T) {
	type ctxs struct {
		ctx     context.Context
		release func()
	}
	lazy := func(parent context.Context, d time.Duration) ctxs {
		c := &Context{}
		c.Init(parent, idKey{}, "", time.Now(), d)
		return ctxs{c, c.Release}
	}
	std := func(parent context.Context, d time.Duration) ctxs {
		if d <= 0 {
			return ctxs{parent, func() {}}
		}
		ctx, cancel := context.WithTimeout(parent, d)
		return ctxs{ctx, cancel}
	}
	errBoom := errors.New("client went away")
	type step func(c ctxs, cancelParent context.CancelCauseFunc)
	sleep := func(d time.Duration) step { return func(ctxs, context.CancelCauseFunc) { time.Sleep(d) } }
	release := func(c ctxs, _ context.CancelCauseFunc) { c.release() }
	cancelParent := func(_ ctxs, cp context.CancelCauseFunc) { cp(errBoom) }
	callDone := func(c ctxs, _ context.CancelCauseFunc) { _ = c.ctx.Done() }
	callErr := func(c ctxs, _ context.CancelCauseFunc) { _ = c.ctx.Err() }
	seq := func(steps ...step) step { // several steps with no observation between them
		return func(c ctxs, cp context.CancelCauseFunc) {
			for _, s := range steps {
				s(c, cp)
			}
		}
	}
	for _, tc := range []struct {
		name           string
		d              time.Duration
		parentDeadline time.Duration
		steps          []step
	}{
		{"deadline passes unobserved", time.Second, 0, []step{sleep(2 * time.Second)}},
		{"deadline passes while watched", time.Second, 0, []step{callDone, sleep(2 * time.Second)}},
		{"released early", time.Second, 0, []step{sleep(100 * time.Millisecond), release, sleep(2 * time.Second)}},
		{"released late", time.Second, 0, []step{sleep(2 * time.Second), release}},
		{"released after an unobserved expiry", time.Second, 0, []step{seq(sleep(2*time.Second), release)}},
		{"parent cancelled after an unobserved expiry", time.Second, 0, []step{seq(sleep(2*time.Second), cancelParent)}},
		{"released early then watched", time.Second, 0, []step{release, callDone, sleep(2 * time.Second)}},
		{"parent cancelled", time.Second, 0, []step{cancelParent, sleep(2 * time.Second), release}},
		{"parent cancelled after expiry seen", time.Second, 0, []step{sleep(2 * time.Second), callErr, cancelParent, callDone}},
		{"parent cancelled while watched", time.Second, 0, []step{callDone, cancelParent}},
		{"parent deadline earlier", time.Second, 500 * time.Millisecond, []step{sleep(700 * time.Millisecond), release}},
		{"parent deadline later", time.Second, 5 * time.Second, []step{sleep(1500 * time.Millisecond), callDone, release}},
		{"no deadline", 0, 0, []step{sleep(time.Hour), cancelParent}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each implementation runs in a bubble of its own, whose clock starts at the same instant.
			run := func(make func(context.Context, time.Duration) ctxs) (obs []string) {
				synctest.Test(t, func(t *testing.T) {
					parent, cp := context.WithCancelCause(context.Background())
					defer cp(nil)
					if tc.parentDeadline > 0 {
						var cancel context.CancelFunc
						parent, cancel = context.WithTimeout(parent, tc.parentDeadline)
						defer cancel()
					}
					c := make(parent, tc.d)
					// Between steps only Deadline and Err are observed, which leave the lazy context
					// lazy; the last observation also waits on Done, asks for the Cause and derives a
					// child, which make the real context.
					observe := func(full bool) {
						dl, ok := c.ctx.Deadline()
						synctest.Wait()
						o := fmtObs(dl, ok, c.ctx.Err())
						if full {
							child, cancelChild := context.WithCancel(c.ctx)
							defer cancelChild()
							o += " cause=" + errString(context.Cause(c.ctx)) +
								" done=" + isClosed(c.ctx.Done()) + " child=" + isClosed(child.Done())
						}
						obs = append(obs, o)
					}
					observe(false)
					for _, s := range tc.steps {
						s(c, cp)
						observe(false)
					}
					observe(true)
					c.release()
				})
				return obs
			}
			want, got := run(std), run(lazy)
			if len(want) == 0 || len(got) != len(want) {
				t.Fatalf("observations: lazy %d, context.WithTimeout %d", len(got), len(want))
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("step %d: lazy %s, context.WithTimeout %s", i, got[i], want[i])
				}
			}
		})
	}
}

func fmtObs(dl time.Time, ok bool, err error) string {
	return dl.Format(time.RFC3339Nano) + " " + map[bool]string{true: "deadline", false: "none"}[ok] + " err=" + errString(err)
}

func isClosed(ch <-chan struct{}) string {
	select {
	case <-ch:
		return "closed"
	default:
		return "open"
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func TestRequestCtxValues(t *testing.T) {
	type key struct{}
	parent := context.WithValue(context.Background(), key{}, "v")
	c := &Context{}
	c.Init(parent, idKey{}, "req-1", time.Now(), time.Second)
	defer c.Release()
	if got := c.Value(idKey{}); got != "req-1" {
		t.Errorf("request id = %v, want req-1", got)
	}
	if got := c.Value(key{}); got != "v" {
		t.Errorf("parent value = %v, want v", got)
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(c, func() { close(fired) })
	defer stop()
	c.Release()
	select {
	case <-fired:
	case <-time.After(10 * time.Second):
		t.Fatal("context.AfterFunc did not run after release")
	}
}

func TestRequestCtxUnobservedParentCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		parent, cancel := context.WithCancel(context.Background())
		c := &Context{}
		c.Init(parent, idKey{}, "", time.Now(), time.Second)
		defer c.Release()
		cancel()
		time.Sleep(2 * time.Second)
		if err := c.Err(); err != context.DeadlineExceeded {
			t.Errorf("Err = %v, want the deadline's error once it has passed", err)
		}
		if err := context.Cause(c); err != context.DeadlineExceeded {
			t.Errorf("Cause = %v, want it to agree with Err", err)
		}
		<-c.Done()
	})
}
