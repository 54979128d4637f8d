package config

import (
	"errors"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

// TestReadBoundedDeadline: an open that never returns (a hung network file system) gives
// ErrFileTimeout after the timeout.
func TestReadBoundedDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		hung := func(string) (*os.File, error) {
			<-release
			return nil, os.ErrClosed
		}
		start := time.Now()
		_, err := readBounded("/mnt/nfs/secret", 10, time.Second, hung)
		if !errors.Is(err, ErrFileTimeout) {
			t.Fatalf("got %v, want ErrFileTimeout", err)
		}
		if took := time.Since(start); took != time.Second {
			t.Fatalf("gave up after %s, want 1s", took)
		}
		close(release) // the abandoned read ends
		synctest.Wait()
	})
}
