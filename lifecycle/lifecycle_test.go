package lifecycle_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudchassis/kit/lifecycle"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type recorder struct {
	mu  sync.Mutex
	log []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, s)
}

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.log, " ")
}

func (r *recorder) hook(name string, startErr, stopErr error) lifecycle.Hook {
	return lifecycle.Hook{
		Name:  name,
		Start: func(context.Context) error { r.add("start:" + name); return startErr },
		Stop:  func(context.Context) error { r.add("stop:" + name); return stopErr },
	}
}

func TestOrderedStartReverseStop(t *testing.T) {
	var r recorder
	g := lifecycle.New()
	g.Append(r.hook("a", nil, nil), r.hook("b", nil, nil), lifecycle.Hook{Name: "nil-funcs"}, r.hook("c", nil, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- g.Run(ctx) }()
	for !strings.Contains(r.String(), "start:c") {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := r.String(), "start:a start:b start:c stop:c stop:b stop:a"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if err := g.Run(context.Background()); !errors.Is(err, lifecycle.ErrAlreadyRun) {
		t.Fatalf("second Run: %v", err)
	}
}

func TestFailedStartStopsStartedHooksInReverse(t *testing.T) {
	var r recorder
	boom := errors.New("boom")
	stopErr := errors.New("stop a failed")
	g := lifecycle.New()
	g.Append(r.hook("a", nil, stopErr), r.hook("b", nil, nil), r.hook("c", boom, nil), r.hook("d", nil, nil))
	err := g.Run(context.Background())
	if got, want := r.String(), "start:a start:b start:c stop:b stop:a"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	var he *lifecycle.HookError
	if !errors.As(err, &he) || he.Hook != "c" || he.Phase != "start" || !errors.Is(err, boom) {
		t.Fatalf("first error should be c's start: %v", err)
	}
	if !errors.Is(err, stopErr) {
		t.Fatalf("stop error not joined: %v", err)
	}
	if !strings.HasPrefix(err.Error(), "start c: boom") {
		t.Fatalf("first error first: %q", err)
	}
}

func TestStartTimeoutStillStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r recorder
		g := lifecycle.New(lifecycle.WithStartTimeout(5 * time.Second))
		g.Append(r.hook("a", nil, nil), lifecycle.Hook{
			Name: "slow",
			Start: func(ctx context.Context) error {
				<-ctx.Done()
				return ctx.Err()
			},
		})
		t0 := time.Now()
		err := g.Run(context.Background())
		if d := time.Since(t0); d != 5*time.Second {
			t.Fatalf("start took %v, want the 5s timeout", d)
		}
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "start timeout 5s exceeded") {
			t.Fatalf("err = %v", err)
		}
		if got := r.String(); got != "start:a stop:a" {
			t.Fatalf("got %q", got)
		}
	})
}

func TestOneStopDeadlineForAllHooks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var remaining time.Duration
		var expiredSeen bool
		g := lifecycle.New(lifecycle.WithStopTimeout(30 * time.Second))
		g.Append(
			lifecycle.Hook{Name: "first", Stop: func(ctx context.Context) error {
				// Runs last; the deadline is spent, but it still gets its turn.
				expiredSeen = ctx.Err() != nil
				return nil
			}},
			lifecycle.Hook{Name: "mid", Stop: func(ctx context.Context) error {
				dl, _ := ctx.Deadline()
				remaining = time.Until(dl)
				<-ctx.Done()
				return ctx.Err()
			}},
			lifecycle.Hook{Name: "last", Stop: func(ctx context.Context) error {
				time.Sleep(20 * time.Second)
				return nil
			}},
		)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := g.Run(ctx)
		if remaining != 10*time.Second {
			t.Fatalf("mid saw %v left, want 10s of the shared 30s", remaining)
		}
		if !expiredSeen {
			t.Fatal("first hook should run with an expired context")
		}
		var he *lifecycle.HookError
		if !errors.As(err, &he) || he.Hook != "mid" || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestFailBeginsShutdownAndComesFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r recorder
		g := lifecycle.New()
		serveErr := errors.New("listener closed unexpectedly")
		stopErr := errors.New("flush failed")
		g.Append(r.hook("telemetry", nil, stopErr), lifecycle.Hook{
			Name: "server",
			Start: func(context.Context) error {
				go func() {
					time.Sleep(time.Second)
					g.Fail(serveErr)
					g.Fail(errors.New("ignored"))
				}()
				return nil
			},
		})
		err := g.Run(context.Background())
		if !errors.Is(err, serveErr) || !errors.Is(err, stopErr) || errors.Unwrap(err) != nil && !strings.HasPrefix(err.Error(), serveErr.Error()) {
			t.Fatalf("err = %v", err)
		}
		if strings.Contains(err.Error(), "ignored") {
			t.Fatalf("only the first Fail counts: %v", err)
		}
	})
}

func TestSignals(t *testing.T) {
	var r recorder
	forced := make(chan int, 1)
	stopping := make(chan struct{})
	release := make(chan struct{})
	g := lifecycle.New(lifecycle.WithSignals(syscall.SIGUSR1), lifecycle.WithForceExit(func(code int) {
		forced <- code
		close(release)
	}))
	started := make(chan struct{})
	g.Append(r.hook("a", nil, nil), lifecycle.Hook{Name: "slow-stop", Stop: func(ctx context.Context) error {
		close(stopping)
		<-release
		return nil
	}}, lifecycle.Hook{Name: "last", Start: func(context.Context) error { close(started); return nil }})
	done := make(chan error)
	go func() { done <- g.Run(context.Background()) }()
	// Every hook has started: from here a signal is a normal stop, whether Run already waits or is
	// still returning from the start phase.
	<-started
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	<-stopping
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if code := <-forced; code != 1 {
		t.Fatalf("force exit code %d", code)
	}
	if err := <-done; err != nil {
		t.Fatalf("a signal is a clean stop: %v", err)
	}
}

func TestObserverSeesPhases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var events []string
		g := lifecycle.New(lifecycle.WithObserver(func(e lifecycle.Event) {
			events = append(events, e.Phase+":"+e.Hook)
		}))
		g.Append(lifecycle.Hook{Name: "x", Start: func(context.Context) error { return nil }, Stop: func(context.Context) error { return nil }})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := g.Run(ctx); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(events, " "); got != "start:x shutdown: stop:x" {
			t.Fatalf("events %q", got)
		}
	})
}

// TestSignalWhileLastHookStartsIsAStop: a signal that arrives while the last hook is starting cannot
// abort anything; it must stop the group normally instead of being swallowed by the start phase (Run
// would then wait for another signal, or here for its context's deadline).
func TestSignalWhileLastHookStartsIsAStop(t *testing.T) {
	var cause error
	g := lifecycle.New(lifecycle.WithSignals(syscall.SIGUSR2), lifecycle.WithObserver(func(e lifecycle.Event) {
		if e.Phase == "shutdown" {
			cause = e.Err
		}
	}))
	g.Append(lifecycle.Hook{Name: "last", Start: func(ctx context.Context) error {
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGUSR2); err != nil {
			return err
		}
		<-ctx.Done() // the start phase took the signal
		return nil   // this hook ignores its context: it has started
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	var se *lifecycle.SignalError
	if !errors.As(cause, &se) || se.Signal != syscall.SIGUSR2 {
		t.Fatalf("stopped by %v, want the signal", cause)
	}
}
