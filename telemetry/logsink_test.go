package telemetry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudchassis/kit/internal/syncbuf"
)

// recWriter records each Write call; when gate is not nil, every Write first waits for a value on it.
type recWriter struct {
	gate chan struct{}

	mu     sync.Mutex
	writes []string
	err    error
	syncs  int
}

func (w *recWriter) Write(p []byte) (int, error) {
	if w.gate != nil {
		<-w.gate
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), w.err
}

func (w *recWriter) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.syncs++
	return nil
}

func (w *recWriter) got() (writes int, all string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.writes), strings.Join(w.writes, "")
}

func line(i int) []byte { return fmt.Appendf(nil, "line %03d\n", i) } // 9 bytes

func TestLogSinkWritesAfterFlushIntervalNotBefore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &recWriter{}
		s := newLogSink(w, 1<<10, time.Second)
		var want bytes.Buffer
		for i := range 3 {
			if _, err := s.Write(line(i)); err != nil {
				t.Fatal(err)
			}
			want.Write(line(i))
		}
		time.Sleep(time.Second - time.Nanosecond)
		synctest.Wait()
		if n, _ := w.got(); n != 0 {
			t.Fatalf("%d writes before the flush interval, want none", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if n, all := w.got(); n != 1 || all != want.String() {
			t.Fatalf("after the interval: %d writes of %q, want 1 of %q", n, all, want.String())
		}
		// The interval counts from the first line of an empty buffer: a quiet sink does not write.
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if n, _ := w.got(); n != 1 {
			t.Fatalf("%d writes while idle, want still 1", n)
		}
		if _, err := s.Write(line(3)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n, all := w.got(); n != 2 || !strings.HasSuffix(all, string(line(3))) {
			t.Fatalf("second interval: %d writes, output %q", n, all)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestLogSinkCloseFlushesThenWritesThrough(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &recWriter{}
		s := newLogSink(w, 1<<10, time.Second)
		for i := range 5 {
			_, _ = s.Write(line(i))
		}
		if n, _ := w.got(); n != 0 {
			t.Fatalf("%d writes before Close, want none", n)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if n, all := w.got(); n != 1 || strings.Count(all, "\n") != 5 {
			t.Fatalf("Close: %d writes of %q, want the 5 lines in one", n, all)
		}
		_, _ = s.Write(line(5)) // after Close: at once
		if n, all := w.got(); n != 2 || !strings.HasSuffix(all, string(line(5))) {
			t.Fatalf("after Close: %d writes, output %q", n, all)
		}
		if err := s.Close(); err != nil { // idempotent
			t.Fatal(err)
		}
		// No timer fires later.
		time.Sleep(time.Minute)
		synctest.Wait()
		if n, _ := w.got(); n != 2 {
			t.Fatalf("%d writes after Close and a minute, want 2", n)
		}
	})
}

func TestLogSinkSyncFlushesAndSyncs(t *testing.T) {
	w := &recWriter{}
	s := newLogSink(w, 1<<10, time.Hour)
	defer s.Close()
	_, _ = s.Write(line(0))
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	if n, all := w.got(); n != 1 || all != string(line(0)) || w.syncs != 1 {
		t.Fatalf("Sync: %d writes of %q, %d syncs; want the line and one sync", n, all, w.syncs)
	}
}

// A full buffer is written in the background while the next lines fill the other buffer; a writer
// waits only when that one is full too, and no line is lost or reordered.
func TestLogSinkFullBufferBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &recWriter{gate: make(chan struct{})}
		s := newLogSink(w, 20, time.Hour) // two 9-byte lines per buffer
		var want bytes.Buffer
		write := func(i int) {
			if _, err := s.Write(line(i)); err != nil {
				t.Error(err)
			}
		}
		for i := range 4 { // lines 0-1 fill buffer A; line 2 hands A to a write, which blocks on gate
			write(i)
			want.Write(line(i))
		}
		synctest.Wait()
		// Buffer B holds lines 2-3; line 4 must wait for the write of A.
		done := make(chan struct{})
		go func() {
			defer close(done)
			write(4)
		}()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("Write returned while both buffers were full and the output blocked")
		default:
		}
		w.gate <- struct{}{} // A is written; B is handed over, line 4 goes into A
		<-done
		want.Write(line(4))
		w.gate <- struct{}{} // B is written
		synctest.Wait()
		go func() { w.gate <- struct{}{} }() // the final flush of line 4
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if n, all := w.got(); n != 3 || all != want.String() {
			t.Fatalf("%d writes of %q, want 3 writes of %q", n, all, want.String())
		}
	})
}

func TestLogSinkLongLine(t *testing.T) {
	w := &recWriter{}
	s := newLogSink(w, 16, time.Hour)
	long := strings.Repeat("x", 100) + "\n"
	_, _ = s.Write(line(0))
	_, _ = s.Write([]byte(long))
	_, _ = s.Write(line(1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, all := w.got(); all != string(line(0))+long+string(line(1)) {
		t.Fatalf("output %q", all)
	}
}

func TestLogSinkReportsWriteError(t *testing.T) {
	boom := errors.New("disk full")
	w := &recWriter{err: boom}
	s := newLogSink(w, 16, time.Hour)
	_, _ = s.Write(line(0))
	_, _ = s.Write(line(1)) // hands line 0 to a background write, which fails
	if err := s.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close = %v, want %v", err, boom)
	}
}

// Through New: a buffered *os.File output holds info lines and 5xx access-log lines until the
// flush interval or Shutdown; an error line from any other logger flushes them at once.
func TestBufferedLogOutput(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, err := os.CreateTemp(t.TempDir(), "log")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		tel, err := New(t.Context(), Settings{ServiceName: "svc", LogOutput: f, LogBuffer: 1 << 16,
			AccessLog: true, AccessLogSuccessSample: 1,
			Lookup: func(string) (string, bool) { return "", false }}, WithoutRuntimeMetrics())
		if err != nil {
			t.Fatal(err)
		}
		lines := func() []string {
			b, err := os.ReadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			return strings.FieldsFunc(string(b), func(r rune) bool { return r == '\n' })
		}
		h := tel.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		tel.Logger().Info("one")
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil)) // access log, level error
		if got := lines(); len(got) != 0 {
			t.Fatalf("written before the flush interval: %q", got)
		}
		tel.Slog().Error("two") // flushes
		if got := lines(); len(got) != 3 || !strings.Contains(got[0], `"one"`) ||
			!strings.Contains(got[1], `"request"`) || !strings.Contains(got[2], `"two"`) {
			t.Fatalf("after an error line: %q", got)
		}
		tel.Logger().Info("three")
		time.Sleep(LogFlushInterval)
		synctest.Wait()
		if got := lines(); len(got) != 4 {
			t.Fatalf("after the flush interval: %q", got)
		}
		tel.Logger().Info("four")
		if err := tel.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := lines(); len(got) != 5 || !strings.Contains(got[4], `"four"`) {
			t.Fatalf("after Shutdown: %q", got)
		}
		tel.Logger().Info("five") // after Shutdown: written at once
		if got := lines(); len(got) != 6 {
			t.Fatalf("after Shutdown, a new line: %q", got)
		}
	})
}

// An io.Writer that is not an *os.File is written line by line, whatever LogBuffer says.
func TestLogBufferOnlyForFiles(t *testing.T) {
	var buf syncbuf.Buffer
	tel, err := New(t.Context(), Settings{LogOutput: &buf, LogBuffer: 1 << 16,
		Lookup: func(string) (string, bool) { return "", false }}, WithoutRuntimeMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	tel.Logger().Info("at once")
	if !strings.Contains(buf.String(), "at once") {
		t.Fatalf("output %q, want the line at once", buf.String())
	}
}

// TestLogSinkCloseWhileWriterWaits: a Write waiting for a background write when Close runs must not
// leave its line in the buffer (no timer or flush would ever write it): it is written through,
// after what Close flushed.
func TestLogSinkCloseWhileWriterWaits(t *testing.T) {
	for range 20 { // which of the two waiters wakes first varies; each order must keep the line
		synctest.Test(t, func(t *testing.T) {
			w := &recWriter{gate: make(chan struct{})}
			s := newLogSink(w, 20, time.Hour)
			var want bytes.Buffer
			for i := range 4 { // A (lines 0-1) is being written, blocked; B holds lines 2-3
				if _, err := s.Write(line(i)); err != nil {
					t.Fatal(err)
				}
				want.Write(line(i))
			}
			synctest.Wait()
			wrote := make(chan struct{})
			go func() { // waits: both buffers are full
				defer close(wrote)
				if _, err := s.Write(line(4)); err != nil {
					t.Error(err)
				}
			}()
			closed := make(chan struct{})
			go func() { // waits for the background write too
				defer close(closed)
				if err := s.Close(); err != nil {
					t.Error(err)
				}
			}()
			synctest.Wait()
			close(w.gate) // the output unblocks for good
			<-wrote
			<-closed
			synctest.Wait()
			want.Write(line(4))
			if _, all := w.got(); all != want.String() {
				t.Fatalf("output %q, want %q", all, want.String())
			}
		})
	}
}

// TestShutdownGivesUpOnAStuckOutput: when the output blocks for good, Shutdown returns at its
// deadline, and later log calls fail at once instead of queueing behind the stuck Close.
func TestShutdownGivesUpOnAStuckOutput(t *testing.T) {
	w := &recWriter{gate: make(chan struct{})}
	s := newLogSink(w, 20, time.Hour)
	for i := range 4 { // a background write is stuck on the output
		if _, err := s.Write(line(i)); err != nil {
			t.Fatal(err)
		}
	}
	tel := &Telemetry{sink: s}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := tel.closeSink(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("closeSink: %v, want the deadline", err)
	}
	for name, f := range map[string]func() error{
		"Write": func() error { _, err := s.Write(line(9)); return err },
		"Sync":  s.Sync,
		"Flush": s.Flush,
	} {
		done := make(chan error, 1)
		go func() { done <- f() }()
		select {
		case err := <-done:
			if !errors.Is(err, errSinkAbandoned) {
				t.Errorf("%s after an abandoned Close: %v, want errSinkAbandoned", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s blocked behind the stuck output", name)
		}
	}
	close(w.gate) // let the stuck writes finish, so that no goroutine outlives the test
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		idle := !s.writing && s.closed
		s.mu.Unlock()
		if idle || time.Now().After(deadline) {
			break
		}
	}
}
