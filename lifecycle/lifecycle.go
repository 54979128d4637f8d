package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Defaults for Run.
const (
	DefaultStartTimeout = 60 * time.Second
	DefaultStopTimeout  = 30 * time.Second
)

// ErrAlreadyRun is returned by a second call to Run, of a Group or of a chassis.Service.
var ErrAlreadyRun = errors.New("lifecycle: already run")

// Hook is one component. Start must return once the component is started (launching its own
// goroutines if it serves in the background) and Stop must stop it and wait for those goroutines.
// Either may be nil.
type Hook struct {
	Name  string
	Start func(ctx context.Context) error
	Stop  func(ctx context.Context) error
}

// HookError tells which hook failed and in which phase.
type HookError struct {
	Hook  string
	Phase string // "start" or "stop"
	Err   error
}

func (e *HookError) Error() string { return fmt.Sprintf("%s %s: %v", e.Phase, e.Hook, e.Err) }
func (e *HookError) Unwrap() error { return e.Err }

// SignalError is the cause of a shutdown that a signal started. Run does not return it: a signal is a
// normal way to stop.
type SignalError struct{ Signal os.Signal }

func (e *SignalError) Error() string { return "received " + e.Signal.String() }

// Option configures a Group.
type Option interface{ apply(*Group) }

type optionFunc func(*Group)

func (f optionFunc) apply(o *Group) { f(o) }

// WithStartTimeout bounds all start hooks together (default DefaultStartTimeout).
func WithStartTimeout(d time.Duration) Option {
	return optionFunc(func(g *Group) { g.startTimeout = d })
}

// WithStopTimeout bounds all stop hooks together (default DefaultStopTimeout).
func WithStopTimeout(d time.Duration) Option { return optionFunc(func(g *Group) { g.stopTimeout = d }) }

// WithSignals makes Run stop on the first of these signals (default SIGINT and SIGTERM when called
// with none) and call forceExit on the second. Only a main function or chassis.Service.Run should
// ask for this: signal handling is process-wide.
func WithSignals(sigs ...os.Signal) Option {
	if len(sigs) == 0 {
		sigs = []os.Signal{os.Interrupt, syscall.SIGTERM}
	}
	return optionFunc(func(g *Group) { g.signals = sigs })
}

// WithForceExit replaces the function a second signal calls (default os.Exit(1)).
func WithForceExit(f func(code int)) Option { return optionFunc(func(g *Group) { g.forceExit = f }) }

// WithObserver is told when each phase begins and ends, for logs. It must not block.
func WithObserver(f func(e Event)) Option { return optionFunc(func(g *Group) { g.observe = f }) }

// Event is a step of Run, for observers.
type Event struct {
	Hook     string
	Phase    string // "start", "stop" or "shutdown" (Hook empty: the reason shutdown began)
	Duration time.Duration
	Err      error
}

// Group runs hooks in order and stops them in reverse.
type Group struct {
	startTimeout time.Duration
	stopTimeout  time.Duration
	signals      []os.Signal
	forceExit    func(int)
	observe      func(Event)

	mu     sync.Mutex
	hooks  []Hook
	ran    bool
	fatal  error
	failed chan struct{} // closed by the first Fail
}

// New returns an empty Group.
func New(opts ...Option) *Group {
	g := &Group{
		startTimeout: DefaultStartTimeout,
		stopTimeout:  DefaultStopTimeout,
		forceExit:    os.Exit,
		observe:      func(Event) {},
		failed:       make(chan struct{}),
	}
	for _, o := range opts {
		o.apply(g)
	}
	return g
}

// Append adds hooks after those already added. Hooks appended after Run began are ignored.
func (g *Group) Append(hooks ...Hook) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.ran {
		g.hooks = append(g.hooks, hooks...)
	}
}

// Fail reports a fatal error from a running component (a server whose Serve returned, say): Run
// begins the shutdown and returns err first. Only the first call counts.
func (g *Group) Fail(err error) {
	if err == nil {
		err = errors.New("component exited")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fatal == nil {
		g.fatal = err
		close(g.failed)
	}
}

// Run starts the hooks, waits for ctx, a signal or Fail, and stops them. It returns nil after a clean
// stop caused by ctx or a signal; otherwise the first error (a failed start or Fail), joined with the
// stop errors. Stop hooks receive a context that carries ctx's values but not its cancellation, bounded
// by the stop timeout.
func (g *Group) Run(ctx context.Context) error {
	g.mu.Lock()
	if g.ran {
		g.mu.Unlock()
		return ErrAlreadyRun
	}
	g.ran = true
	hooks := append([]Hook(nil), g.hooks...)
	g.mu.Unlock()

	var sigc chan os.Signal
	if len(g.signals) > 0 {
		sigc = make(chan os.Signal, 2)
		signal.Notify(sigc, g.signals...)
		defer signal.Stop(sigc)
	}

	started, startErr := g.start(ctx, hooks, sigc)
	var cause error
	if startErr == nil {
		select {
		case <-ctx.Done():
			cause = context.Cause(ctx)
		case s := <-sigc:
			cause = &SignalError{Signal: s}
		case <-g.failed:
			cause = g.fatalErr()
		}
		g.observe(Event{Phase: "shutdown", Err: cause})
	}

	// A second signal during the stop forces the exit.
	stopDone := make(chan struct{})
	var watch sync.WaitGroup
	if sigc != nil {
		watch.Go(func() {
			select {
			case <-sigc:
				g.forceExit(1)
			case <-stopDone:
			}
		})
	}
	stopErr := g.stop(context.WithoutCancel(ctx), started)
	close(stopDone)
	watch.Wait()

	first := startErr
	if first == nil {
		if fe := g.fatalErr(); fe != nil {
			first = fe
		}
	}
	return errors.Join(first, stopErr)
}

func (g *Group) fatalErr() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fatal
}

// start runs start hooks in order and returns how many succeeded. A signal, ctx or Fail during the
// start aborts it.
func (g *Group) start(ctx context.Context, hooks []Hook, sigc chan os.Signal) ([]Hook, error) {
	sctx, cancel := context.WithTimeout(ctx, g.startTimeout)
	defer cancel()
	abort := make(chan struct{})
	var watch sync.WaitGroup
	var sig os.Signal
	watch.Go(func() {
		select {
		case s := <-sigc:
			sig = s
			cancel()
		case <-g.failed:
			cancel()
		case <-abort:
		}
	})
	stopWatch := sync.OnceFunc(func() {
		close(abort)
		watch.Wait()
	})
	defer stopWatch()
	for i, h := range hooks {
		if err := sctx.Err(); err != nil {
			return hooks[:i], g.startAborted(sctx, h, sig)
		}
		if h.Start == nil {
			continue
		}
		t0 := time.Now()
		err := h.Start(sctx)
		g.observe(Event{Hook: h.Name, Phase: "start", Duration: time.Since(t0), Err: err})
		if err != nil {
			if sctx.Err() != nil {
				err = errors.Join(err, g.startAborted(sctx, h, sig))
			}
			// The failed hook is not stopped: it did not start.
			return hooks[:i], &HookError{Hook: h.Name, Phase: "start", Err: err}
		}
	}
	stopWatch()
	if sig != nil {
		// The signal came while the last hook was starting, too late to abort anything: it asks for a
		// normal stop, which Run's wait delivers. The watcher took it from sigc, so there is room,
		// unless newer signals filled it, which stop Run as well.
		select {
		case sigc <- sig:
		default:
		}
	}
	return hooks, nil
}

func (g *Group) startAborted(ctx context.Context, h Hook, sig os.Signal) error {
	switch {
	case sig != nil:
		return &HookError{Hook: h.Name, Phase: "start", Err: fmt.Errorf("start interrupted: %w", &SignalError{Signal: sig})}
	case g.fatalErr() != nil:
		return nil // the fatal error is returned first by Run
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return &HookError{Hook: h.Name, Phase: "start", Err: fmt.Errorf("start timeout %v exceeded: %w", g.startTimeout, ctx.Err())}
	}
	return &HookError{Hook: h.Name, Phase: "start", Err: context.Cause(ctx)}
}

// stop runs stop hooks in reverse order under one deadline. Every hook gets its turn, even after the
// deadline passed (with an expired context), so each can release what it must.
func (g *Group) stop(ctx context.Context, started []Hook) error {
	sctx, cancel := context.WithTimeout(ctx, g.stopTimeout)
	defer cancel()
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		h := started[i]
		if h.Stop == nil {
			continue
		}
		t0 := time.Now()
		err := h.Stop(sctx)
		g.observe(Event{Hook: h.Name, Phase: "stop", Duration: time.Since(t0), Err: err})
		if err != nil {
			errs = append(errs, &HookError{Hook: h.Name, Phase: "stop", Err: err})
		}
	}
	return errors.Join(errs...)
}
