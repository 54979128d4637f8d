package telemetry

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"
)

// DefaultLogBuffer is the log buffer chassis uses by default (LOG_BUFFER): at about 300 bytes per
// access-log line, one write(2) per ~800 requests under load instead of one per request.
const DefaultLogBuffer = 256 << 10

// LogFlushInterval is the longest a log line waits in the buffer when the buffer does not fill: a
// quiet service's lines reach `kubectl logs -f` and log shippers (which tail at about this
// granularity anyway) within a second, at the cost of one write per second.
const LogFlushInterval = time.Second

// logSink buffers log lines in memory and writes them to out from a background write, so that a
// request's log line costs a copy, not a system call. It is double-buffered: lines fill buf while
// the previous buffer is being written; a writer waits only when buf is full and the previous write
// has not finished, i.e. when out is slower than the service logs (backpressure, not loss: a line
// is never dropped). Lines are written in order, whole, and at most LogFlushInterval after they
// were logged. Flush and Sync write everything buffered before returning; after Close, lines are
// written straight through.
//
// No goroutine lives while the sink is idle: a full buffer is handed to one short-lived write, and
// the flush interval is an AfterFunc timer armed by the first line of an empty buffer.
type logSink struct {
	out      io.Writer
	sync     func() error // out's Sync, or nil
	size     int
	interval time.Duration

	mu      sync.Mutex
	idle    sync.Cond // broadcast when a background write ends
	buf     []byte    // lines not yet handed to a write
	spare   []byte    // the other buffer, nil while a background write owns it
	writing bool      // a background write is in progress
	timer   *time.Timer
	armed   bool
	closed  bool
	err     error // first error of a background write, reported by the next Flush, Sync or Close

	// abandoned is set when a Close did not finish within Shutdown's deadline: the output is stuck
	// and a goroutine holds mu in a write that may never return. From then on Write, Flush and Sync
	// fail at once with errSinkAbandoned instead of queueing behind it, so that the process can exit.
	abandoned atomic.Bool
}

// errSinkAbandoned is what the sink answers after a Close that timed out on a stuck output.
var errSinkAbandoned = errors.New("telemetry: log output stuck; buffered log abandoned at shutdown")

var _ zapcore.WriteSyncer = (*logSink)(nil)

func newLogSink(out io.Writer, size int, interval time.Duration) *logSink {
	s := &logSink{out: out, size: size, interval: interval, buf: make([]byte, 0, size), spare: make([]byte, 0, size)}
	if ws, ok := out.(interface{ Sync() error }); ok {
		s.sync = ws.Sync
	}
	s.idle.L = &s.mu
	return s
}

// Write buffers p, which zap passes as one whole encoded line.
func (s *logSink) Write(p []byte) (int, error) {
	if s.abandoned.Load() {
		return 0, errSinkAbandoned
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return s.out.Write(p)
	}
	if len(s.buf) > 0 && len(s.buf)+len(p) > s.size {
		for s.writing {
			s.idle.Wait()
		}
		if s.closed { // Close ran while this writer waited: keep the order, write through
			return s.out.Write(p)
		}
		if len(s.buf) > 0 { // another writer may have handed it over while this one waited
			s.startWrite()
		}
	}
	s.buf = append(s.buf, p...) // a line longer than size gets a buffer of its own
	if !s.armed {
		s.armed = true
		if s.timer == nil {
			s.timer = time.AfterFunc(s.interval, s.tick)
		} else {
			s.timer.Reset(s.interval)
		}
	}
	return len(p), nil
}

// startWrite hands buf to a background write. s.mu is held and no write is in progress.
func (s *logSink) startWrite() {
	chunk := s.buf
	s.buf, s.spare = s.spare[:0], nil
	s.writing = true
	go s.write(chunk)
}

func (s *logSink) write(chunk []byte) {
	_, err := s.out.Write(chunk)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil && s.err == nil {
		s.err = err
	}
	if cap(chunk) <= 2*s.size { // keep the buffer unless one huge line grew it
		s.spare = chunk[:0]
	} else {
		s.spare = make([]byte, 0, s.size)
	}
	s.writing = false
	s.idle.Broadcast()
}

// tick is the flush-interval timer: it hands whatever is buffered to a background write.
func (s *logSink) tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed = false
	if s.closed || len(s.buf) == 0 {
		return
	}
	if s.writing { // out is busy: look again in an interval
		s.armed = true
		s.timer.Reset(s.interval)
		return
	}
	s.startWrite()
}

// Flush writes everything buffered, and waits for a background write in progress, before it
// returns. Lines logged meanwhile wait for it.
func (s *logSink) Flush() error {
	if s.abandoned.Load() {
		return errSinkAbandoned
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushLocked()
}

func (s *logSink) flushLocked() error {
	for s.writing {
		s.idle.Wait()
	}
	var err error
	if len(s.buf) > 0 {
		_, err = s.out.Write(s.buf)
		s.buf = s.buf[:0]
	}
	if s.armed {
		s.armed = false
		s.timer.Stop() // a tick already under way finds the buffer empty
	}
	err = errors.Join(s.err, err)
	s.err = nil
	return err
}

// Sync flushes, then syncs out when it can be synced. zap calls it for DPanic, Panic and Fatal
// entries, and Logger.Sync calls it.
func (s *logSink) Sync() error {
	if s.abandoned.Load() {
		return errSinkAbandoned
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.flushLocked()
	if s.sync != nil {
		err = errors.Join(err, s.sync())
	}
	return err
}

// Close flushes and turns buffering off: later lines (the service's last words after Shutdown)
// are written straight through. Close is idempotent.
func (s *logSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	err := s.flushLocked()
	s.closed = true
	return err
}

// flushCore writes an entry through Core, then flushes the sink when the entry is an error or
// worse, so that the lines explaining a failure (and those before them) are on the output before
// the process can crash or exit. The access log does not use it: its 5xx lines are traffic, and a
// burst of them (load shedding) must not turn every request back into a write(2).
type flushCore struct {
	zapcore.Core
	sink *logSink
}

func (c *flushCore) With(fields []zapcore.Field) zapcore.Core {
	return &flushCore{Core: c.Core.With(fields), sink: c.sink}
}

func (c *flushCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *flushCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	err := c.Core.Write(e, fields)
	if e.Level >= zapcore.ErrorLevel {
		err = errors.Join(err, c.sink.Flush())
	}
	return err
}
