package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// Limits of the files that NAME_FILE variables name. A NAME_FILE variable holds a secret or a short
// setting: a megabyte is far more than any needs, and small enough that pointing one at the wrong
// file cannot exhaust memory.
const (
	MaxFileSize     = 1 << 20         // largest file Load reads for a NAME_FILE variable, in bytes
	FileReadTimeout = 5 * time.Second // longest ReadFileBounded waits for open and read to finish
)

// Errors of ReadFileBounded, for errors.Is.
var (
	ErrNotRegular   = errors.New("not a regular file")
	ErrFileTooLarge = errors.New("file too large")
	ErrFileTimeout  = errors.New("file read timed out")
)

// ReadFileBounded reads the regular file at path, refusing anything else: a file larger than max
// bytes (ErrFileTooLarge), a device, FIFO, socket or directory (ErrNotRegular; /dev/zero and a pipe
// nobody writes to fail at once instead of exhausting memory or hanging), and an open and read that
// take longer than FileReadTimeout (ErrFileTimeout; a hung network file system). Symbolic links are
// followed, so Kubernetes' mounted secrets work. Errors name the path, never the content.
//
// A read that outlives the timeout is abandoned, not interrupted (a blocked read(2) on a regular
// file cannot be): its goroutine ends, and closes the file, when the system call returns. It is
// safe for concurrent use.
func ReadFileBounded(path string, max int64) ([]byte, error) {
	return readBounded(path, max, FileReadTimeout, openNonBlocking)
}

// openNonBlocking opens path for reading, refusing what is not a regular file before the open, and
// without blocking on a FIFO that has no writer (on Unix, with O_NONBLOCK, which regular files ignore).
func openNonBlocking(path string) (*os.File, error) {
	// Look before opening: opening a device can have effects of its own (a watchdog arms, a tape
	// rewinds). readRegular checks again after the open, for a file swapped in between.
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, kind(st.Mode()))
	}
	return os.OpenFile(path, os.O_RDONLY|oNonBlock, 0)
}

func readBounded(path string, max int64, timeout time.Duration, open func(string) (*os.File, error)) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1) // buffered: an abandoned read still finishes and exits
	go func() {
		b, err := readRegular(path, max, open)
		done <- result{b, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-done:
		return r.b, r.err
	case <-t.C:
		return nil, fmt.Errorf("%s: %w after %s", path, ErrFileTimeout, timeout)
	}
}

func readRegular(path string, max int64, open func(string) (*os.File, error)) ([]byte, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, kind(st.Mode()))
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s: %w: %d bytes, at most %d", path, ErrFileTooLarge, st.Size(), max)
	}
	// The size can change between Stat and the read (or be 0 for files in /proc): bound the read too.
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: %w: more than %d bytes", path, ErrFileTooLarge, max)
	}
	return b, nil
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "mode " + m.String()
}
