package guard

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/internal/obs"
	"github.com/cloudchassis/kit/problem"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Defaults of BodyConfig.
const (
	DefaultBodyBufferBytes = 1 << 20  // 1 MiB
	DefaultBodyBufferTotal = 64 << 20 // 64 MiB
	DefaultBodyMinRate     = 1 << 10  // 1 KiB/s
	DefaultBodyGrace       = 5 * time.Second
	DefaultBodyPerPeer     = 64
)

// BodyConfig configures a BodyGate. Zero fields take the defaults above.
type BodyConfig struct {
	// BufferBytes: bodies declared (Content-Length) up to this size, and chunked bodies up to it, are
	// read whole before the request goes on. Larger bodies are streamed to the handler.
	BufferBytes int64
	// BufferTotal bounds the memory all buffered bodies hold at once. A body that would go beyond
	// it is streamed to the handler from where buffering stopped.
	BufferTotal int64
	// MinRate is the slowest a body may arrive, in bytes per second, once Grace has passed: the
	// read deadline is start + Grace + received/MinRate, moved forward as bytes arrive.
	MinRate int64
	// Grace is the time a body may take before MinRate applies.
	Grace time.Duration
	// MaxTime caps the read deadline, counted from when the gate sees the request; give the
	// server's ReadTimeout (0: no cap), which the gate's deadlines replace while it reads.
	MaxTime time.Duration
	// PerPeer is how many bodies one client address may have being read before admission at once;
	// beyond it the request is refused with 429.
	PerPeer int
	// ClientIP names a request's client for PerPeer. nil uses the connection's address.
	ClientIP *ClientIP
}

func (c BodyConfig) withDefaults() BodyConfig {
	if c.BufferBytes <= 0 {
		c.BufferBytes = DefaultBodyBufferBytes
	}
	if c.BufferTotal <= 0 {
		c.BufferTotal = DefaultBodyBufferTotal
	}
	if c.MinRate <= 0 {
		c.MinRate = DefaultBodyMinRate
	}
	if c.Grace <= 0 {
		c.Grace = DefaultBodyGrace
	}
	if c.PerPeer <= 0 {
		c.PerPeer = DefaultBodyPerPeer
	}
	if c.ClientIP == nil {
		c.ClientIP = &ClientIP{}
	}
	return c
}

// BodyGate reads request bodies before the requests go on to admission (the Shedder) and the
// handler, so that time spent waiting for a client's bytes is neither a server slot nor server
// latency: a client that sends its body at one byte per second holds a goroutine and a few
// kilobytes, not one of the few requests the Shedder lets in.
//
// Every body must keep up a minimum rate (BodyConfig.MinRate after Grace), enforced with the
// connection's read deadline (http.ResponseController), so a trickling client is cut off with 408
// Request Timeout instead of holding its connection for the server's whole ReadTimeout. Each client
// address may have BodyConfig.PerPeer bodies being read at once (429 beyond), and all buffered
// bodies together hold at most BodyConfig.BufferTotal bytes, reserved as the bytes arrive (a
// declared Content-Length reserves nothing by itself).
//
// Bodies larger than BufferBytes (uploads) are streamed to the handler under the same minimum rate.
// They hold a Shedder slot while the handler reads them, but the time the handler spends blocked
// on the client is left out of the Shedder's latency sample.
//
// The gate needs the server to reset read deadlines between requests, which net/http does whenever
// ReadHeaderTimeout or ReadTimeout is set. A request without a body passes straight through, with
// no allocation. A BodyGate is safe for concurrent use and starts no goroutine.
type BodyGate struct {
	cfg    BodyConfig
	now    func() time.Time
	budget atomic.Int64

	mu    sync.Mutex
	peers map[string]int

	logger   *slog.Logger
	refused  metric.Int64Counter
	problems func(w http.ResponseWriter, r *http.Request, status int, detail string)
}

// NewBodyGate returns a BodyGate configured by cfg; zero fields take the defaults.
func NewBodyGate(cfg BodyConfig, opts ...Option) (*BodyGate, error) {
	cfg = cfg.withDefaults()
	o := newOptions(opts)
	g := &BodyGate{cfg: cfg, now: o.now, peers: make(map[string]int), logger: o.Logger, problems: o.problems}
	g.budget.Store(cfg.BufferTotal)
	in := obs.NewInstruments(o.Meters, semconv.ScopeGuard)
	g.refused = in.Counter(semconv.MetricServerBodyRefused, semconv.UnitRequest,
		"Requests refused because their body arrived too slowly or their client had too many bodies in progress.")
	if err := in.Err(); err != nil {
		return nil, fmt.Errorf("guard: body gate metrics: %w", err)
	}
	return g, nil
}

// Reasons a body was refused, in logs and in the metric's chassis.rejection.reason.
const (
	reasonBodySlow = semconv.ReasonBodyTooSlow
	reasonBodyPeer = semconv.ReasonBodyPeerLimit
)

// Middleware reads the request body (see BodyGate) before calling next. It replaces r.Body, so it
// belongs after a middleware that has already copied the request (WithContext). A nil *BodyGate
// returns next unchanged.
func (g *BodyGate) Middleware(next http.Handler) http.Handler {
	if g == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		g.serve(w, r, next)
	})
}

func (g *BodyGate) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	peer := g.cfg.ClientIP.Key(r)
	if !g.enter(peer) {
		g.refuse(w, r, http.StatusTooManyRequests, reasonBodyPeer, peer, 0, 0,
			"too many request bodies from this client are in progress (at most "+strconv.Itoa(g.cfg.PerPeer)+"); retry in 1 s")
		return
	}
	rd := &rateReader{body: r.Body, rc: http.NewResponseController(w), g: g, start: g.now()}
	rd.extend()
	buf, complete, err := g.fill(rd, r.ContentLength)
	g.leave(peer)
	defer g.budget.Add(int64(cap(buf)))
	if err != nil && isTimeout(err) {
		g.refuse(w, r, http.StatusRequestTimeout, reasonBodySlow, peer, rd.got, g.now().Sub(rd.start),
			"the request body arrived slower than "+strconv.FormatInt(g.cfg.MinRate, 10)+" bytes/s")
		return
	}
	switch {
	case complete:
		r.Body = &bufferedBody{b: buf}
	default:
		rd.waited.Store(0) // from here on, waiting is the handler's (and left out of its latency)
		// Larger than the buffer, beyond the memory budget, or failed (the handler sees the error
		// where it would have without the gate: a client gone, a body over http.MaxBytesReader's limit).
		r.Body = &streamedBody{prefix: buf, rd: rd, err: err}
	}
	next.ServeHTTP(w, r)
}

// fill reads the body into memory: all of it when it fits BufferBytes and the budget (complete),
// else as much as did. A declared length reserves memory only as its bytes arrive.
func (g *BodyGate) fill(rd *rateReader, declared int64) (buf []byte, complete bool, err error) {
	if declared > g.cfg.BufferBytes {
		return nil, false, nil
	}
	target := g.cfg.BufferBytes
	if declared > 0 {
		target = declared
	}
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) == target {
				if declared < 0 {
					return buf, false, nil // a chunked body longer than the buffer: the rest streams
				}
				// Every declared byte is here; read the EOF, so that net/http knows the body is
				// finished (and starts watching the connection for the client going away).
				var one [1]byte
				_, err := rd.Read(one[:])
				if err == io.EOF {
					return buf, true, nil
				}
				return buf, false, err
			}
			grow := min(target, max(bodyChunk, 2*int64(cap(buf)))) - int64(cap(buf))
			if g.budget.Add(-grow) < 0 {
				g.budget.Add(grow)
				return buf, false, nil
			}
			nb := make([]byte, len(buf), int64(cap(buf))+grow)
			copy(nb, buf)
			buf = nb
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, true, nil
		}
		if err != nil {
			return buf, false, err
		}
	}
}

// bodyChunk is the first allocation for a body: most JSON bodies fit, and a client that declares
// a megabyte and then trickles holds no more than this.
const bodyChunk = 4 << 10

func (g *BodyGate) enter(peer string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.peers[peer] >= g.cfg.PerPeer {
		return false
	}
	g.peers[peer]++
	return true
}

func (g *BodyGate) leave(peer string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n := g.peers[peer]; n <= 1 {
		delete(g.peers, peer)
	} else {
		g.peers[peer] = n - 1
	}
}

func (g *BodyGate) refuse(w http.ResponseWriter, r *http.Request, status int, reason, peer string, got int64, took time.Duration, detail string) {
	ctx := r.Context()
	g.refused.Add(ctx, 1, metric.WithAttributes(attribute.String(semconv.AttrRejectionReason, reason)))
	if g.logger.Enabled(ctx, slog.LevelWarn) {
		g.logger.LogAttrs(ctx, slog.LevelWarn, "request body refused",
			slog.String("reason", reason),
			slog.String("peer", peer),
			slog.Int64("received_bytes", got),
			slog.Duration("elapsed", took))
	}
	h := w.Header()
	h.Set("Connection", "close") // the rest of the body is not read: it must not be parsed as a request
	if status == http.StatusTooManyRequests {
		h.Set("Retry-After", "1")
	}
	if g.problems != nil {
		g.problems(w, r, status, detail)
		return
	}
	problem.Write(w, status, "", detail)
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// rateReader reads a body under the minimum-rate deadline and counts the time spent blocked.
type rateReader struct {
	body   io.ReadCloser
	rc     *http.ResponseController
	g      *BodyGate
	start  time.Time
	got    int64
	waited atomic.Int64 // ns blocked in Read
	off    bool         // the writer cannot set deadlines, or the body is finished
}

func (b *rateReader) Read(p []byte) (int, error) {
	t0 := b.g.now()
	n, err := b.body.Read(p)
	b.waited.Add(int64(b.g.now().Sub(t0)))
	b.got += int64(n)
	switch {
	case err == io.EOF:
		b.finish()
	case n > 0:
		b.extend()
	}
	return n, err
}

// extend moves the read deadline to start + Grace + received/MinRate, capped by MaxTime.
func (b *rateReader) extend() {
	if b.off {
		return
	}
	c := b.g.cfg
	d := c.Grace + time.Duration(float64(b.got)/float64(c.MinRate)*float64(time.Second))
	if c.MaxTime > 0 {
		d = min(d, c.MaxTime)
	}
	if err := b.rc.SetReadDeadline(b.start.Add(d)); err != nil {
		b.off = true // not supported by this writer: the server's own timeouts apply
	}
}

// finish stops moving the deadline once the body is read. It sets none: on the body's EOF,
// net/http clears the read deadline itself and starts a background read that watches for the
// client going away, and a deadline set now would fire in that read and cancel the request's
// context while the handler works.
func (b *rateReader) finish() { b.off = true }

// bufferedBody is a body read whole before admission.
type bufferedBody struct {
	b []byte
	i int
}

func (b *bufferedBody) Read(p []byte) (int, error) {
	if b.i >= len(b.b) {
		return 0, io.EOF
	}
	n := copy(p, b.b[b.i:])
	b.i += n
	return n, nil
}

func (b *bufferedBody) Close() error { return nil }

// WriteTo lets io.Copy and io.ReadAll-like callers take the bytes in one call.
func (b *bufferedBody) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(b.b[b.i:])
	b.i += n
	return int64(n), err
}

// streamedBody is what was buffered, then the rest of the body from the connection.
type streamedBody struct {
	prefix []byte
	rd     *rateReader
	err    error // the error that stopped buffering, returned after the prefix
}

func (b *streamedBody) Read(p []byte) (int, error) {
	if len(b.prefix) > 0 {
		n := copy(p, b.prefix)
		b.prefix = b.prefix[n:]
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	return b.rd.Read(p)
}

func (b *streamedBody) Close() error { return b.rd.body.Close() }

// clientWait is the time the handler spent blocked on the client, which the Shedder leaves out of
// the request's latency.
func (b *streamedBody) clientWait() time.Duration { return time.Duration(b.rd.waited.Load()) }
