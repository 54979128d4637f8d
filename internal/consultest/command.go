package consultest

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// Run runs f with a TB for a command rather than a test, so that a program (examples/cap,
// bench/capacity) can start agents with the same helpers: Fatal and Fatalf end f and become Run's
// error, Errorf marks it failed and logs to stderr, TempDir directories and Cleanup functions are
// removed and run, last first, when f returns or fails. Fatal must be called from f's goroutine.
func Run(f func(t TB)) (err error) {
	c := &command{}
	defer c.cleanup()
	defer func() {
		if p := recover(); p != nil {
			msg, ok := p.(fatal)
			if !ok {
				panic(p)
			}
			err = errors.New(string(msg))
		}
	}()
	f(c)
	if c.Failed() {
		return errors.New("consultest: failed (see the errors above)")
	}
	return nil
}

// command is Run's TB.
type command struct {
	mu       sync.Mutex
	cleanups []func()
	failed   bool
}

// fatal is the panic value of Fatal; Run recovers it.
type fatal string

func (c *command) Helper() {}

func (c *command) Cleanup(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cleanups = append(c.cleanups, f)
}

func (c *command) TempDir() string {
	dir, err := os.MkdirTemp("", "consultest-")
	if err != nil {
		c.Fatal(err)
	}
	c.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func (c *command) Failed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

func (c *command) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func (c *command) Errorf(format string, args ...any) {
	c.mu.Lock()
	c.failed = true
	c.mu.Unlock()
	c.Logf(format, args...)
}

func (c *command) Fatal(args ...any) { c.Fatalf("%s", fmt.Sprint(args...)) }

func (c *command) Fatalf(format string, args ...any) {
	c.mu.Lock()
	c.failed = true
	c.mu.Unlock()
	panic(fatal(fmt.Sprintf(format, args...)))
}

// cleanup runs the Cleanup functions, last registered first.
func (c *command) cleanup() {
	c.mu.Lock()
	fs := c.cleanups
	c.cleanups = nil
	c.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}
