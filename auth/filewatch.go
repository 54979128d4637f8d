package auth

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fileWatch re-reads material kept in files (certificates, keys, CA bundles) when the files change:
// on use, at most once per interval, comparing each file's path, modification time and size. A read
// that fails keeps the previous material in use; its error is kept for Err. Reloader and
// ClientReloader are each a fileWatch around their own read.
type fileWatch struct {
	now      func() time.Time
	interval time.Duration
	stamp    func() (string, error) // identifies the versions of the files
	read     func() error           // reads the files and publishes the material; called with mu held

	mu        sync.Mutex // one check at a time
	nextCheck time.Time
	last      string // the stamp of the material in use
	lastErr   atomic.Pointer[error]
}

// start reads the files for the first time.
func (w *fileWatch) start() error {
	if err := w.load(); err != nil {
		return err
	}
	w.nextCheck = w.now().Add(w.interval)
	return nil
}

// Err returns the error of the last read, nil if it succeeded.
func (w *fileWatch) Err() error {
	if p := w.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Reload re-reads the files now, whether or not they changed.
func (w *fileWatch) Reload() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.load()
}

// maybeReload re-reads the files when the interval has passed since the last check and they changed.
func (w *fileWatch) maybeReload() {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Before(w.nextCheck) {
		return
	}
	w.nextCheck = now.Add(w.interval)
	if stamp, err := w.stamp(); err == nil && stamp == w.last {
		return
	}
	_ = w.load() // the error is kept for Err; the previous material stays in use
}

// load is called with mu held (or before the fileWatch is shared).
func (w *fileWatch) load() (err error) {
	defer func() {
		if err != nil {
			w.lastErr.Store(&err)
		} else {
			w.lastErr.Store(nil)
		}
	}()
	stamp, err := w.stamp()
	if err != nil {
		return err
	}
	if err := w.read(); err != nil {
		return err
	}
	w.last = stamp
	return nil
}

// fileStamp identifies the versions of files by path, modification time and size; empty names
// are skipped. name, when not nil, turns a file's error into the caller's (a *config.Problem).
func fileStamp(files []string, name func(i int, err error) error) (string, error) {
	var b strings.Builder
	for i, f := range files {
		if f == "" {
			continue
		}
		st, err := os.Stat(f)
		if err != nil {
			if name != nil {
				return "", name(i, err)
			}
			return "", err
		}
		fmt.Fprintf(&b, "%s:%d:%d;", f, st.ModTime().UnixNano(), st.Size())
	}
	return b.String(), nil
}
