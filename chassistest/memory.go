package chassistest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
)

// commitSize is how much of a response body the in-memory server buffers before it sends the
// headers, as net/http's server buffers the start of a response (and can then set Content-Length).
const commitSize = 4 << 10

// ErrHandlerPanicked is the error of a request whose handler panicked before the response started;
// once it started, the response body ends with io.ErrUnexpectedEOF instead, as a dropped connection
// would.
var ErrHandlerPanicked = errors.New("chassistest: handler panicked")

// HandlerTransport returns an http.RoundTripper that serves each request with h in memory, without
// sockets: the handler runs in a goroutine of its own, sees a server-side request (RequestURI,
// RemoteAddr, Host, a context that ends when the client gives up or the handler returns), and its
// response streams back as it is written. The URL's host is ignored.
//
// Because nothing waits on the network, requests made inside a testing/synctest bubble run entirely
// on the bubble's clock. The response body must be read to the end or closed, as with any
// transport; closing it early cancels the handler's context, like a closed connection. A panic in the
// handler fails the request with ErrHandlerPanicked (or cuts the body) instead of crashing the test,
// except http.ErrAbortHandler, which just cuts it.
//
// The transport is safe for concurrent use.
func HandlerTransport(h http.Handler) http.RoundTripper { return handlerTransport{h: h} }

type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil {
		closeBody(req)
		return nil, errors.New("chassistest: request has no URL")
	}
	ctx, cancel := context.WithCancel(req.Context())
	sreq, err := serverRequest(ctx, req)
	if err != nil {
		cancel()
		closeBody(req)
		return nil, err
	}
	w := &memWriter{header: http.Header{}, committed: make(chan struct{}), body: newPipe(req.Context()), head: req.Method == http.MethodHead}
	go func() {
		defer cancel()
		p := serve(t.h, w, sreq)
		closeBody(req)
		w.finish(p)
	}()
	select {
	case <-w.committed:
	case <-req.Context().Done():
		// The client gave up before the headers, which on a real server closes the connection.
		cancel()
		w.body.closeRead()
		return nil, req.Context().Err()
	}
	if w.err != nil {
		return nil, w.err
	}
	return w.response(req, cancel), nil
}

// serve runs the handler and returns what it panicked with, if anything.
func serve(h http.Handler, w http.ResponseWriter, r *http.Request) (p any) {
	defer func() { p = recover() }()
	h.ServeHTTP(w, r)
	return nil
}

// serverRequest turns a client request into the request a server would have parsed.
func serverRequest(ctx context.Context, req *http.Request) (*http.Request, error) {
	sreq := req.Clone(ctx)
	sreq.RequestURI = req.URL.RequestURI()
	u, err := url.ParseRequestURI(sreq.RequestURI)
	if err != nil {
		return nil, fmt.Errorf("chassistest: request URI %q: %w", sreq.RequestURI, err)
	}
	sreq.URL = u
	if sreq.Host == "" {
		sreq.Host = req.URL.Host
	}
	sreq.Header.Del("Host")
	sreq.Proto, sreq.ProtoMajor, sreq.ProtoMinor = "HTTP/1.1", 1, 1
	sreq.RemoteAddr = "127.0.0.1:1"
	sreq.GetBody = nil
	sreq.Close = false
	switch {
	case req.Body == nil || req.Body == http.NoBody:
		sreq.Body = http.NoBody
		sreq.ContentLength = 0
	case req.ContentLength == 0:
		sreq.ContentLength = -1 // unknown length: a chunked body on the wire
	}
	return sreq, nil
}

// memWriter is the handler's http.ResponseWriter. Writes are buffered until commitSize bytes, a
// Flush, or the handler's return; then the headers are committed and the body streams through pipe.
type memWriter struct {
	mu        sync.Mutex
	header    http.Header
	sent      http.Header // snapshot of header at commit
	status    int
	buf       []byte // body written before the commit
	committed chan struct{}
	done      bool // commit happened
	finished  bool // handler returned before the commit: the length is known
	err       error
	head      bool
	body      *pipe
}

func (w *memWriter) Header() http.Header { return w.header }

func (w *memWriter) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status != 0 || code < 200 { // informational responses are not relayed
		return
	}
	w.status = code
}

func (w *memWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if !bodyAllowed(w.status) {
		w.mu.Unlock()
		return 0, http.ErrBodyNotAllowed
	}
	if !w.done {
		if w.header.Get("Content-Type") == "" && w.header.Get("Content-Encoding") == "" && len(w.buf) == 0 && len(b) > 0 {
			w.header.Set("Content-Type", http.DetectContentType(b))
		}
		w.buf = append(w.buf, b...)
		if len(w.buf) >= commitSize {
			w.commitLocked()
		}
		w.mu.Unlock()
		return len(b), nil
	}
	w.mu.Unlock()
	if w.head {
		return len(b), nil
	}
	return w.body.write(b)
}

// Flush commits the headers and whatever was written so far.
func (w *memWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if !w.done {
		w.commitLocked()
	}
}

func (w *memWriter) commitLocked() {
	w.done = true
	w.sent = w.header.Clone()
	if len(w.buf) > 0 && !w.head {
		_, _ = w.body.write(w.buf)
	}
	w.buf = nil
	close(w.committed)
}

// finish ends the response when the handler returns, or panicked with p.
func (w *memWriter) finish(p any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var err error
	if p != nil {
		if p == http.ErrAbortHandler {
			err = io.ErrUnexpectedEOF
		} else {
			err = fmt.Errorf("%w: %v", ErrHandlerPanicked, p)
		}
	}
	if !w.done {
		if err != nil {
			w.err = err
			w.done = true
			close(w.committed)
			w.body.close(err)
			return
		}
		if w.status == 0 {
			w.status = http.StatusOK
		}
		w.finished = true
		if w.header.Get("Content-Length") == "" && bodyAllowed(w.status) && !w.head {
			w.header.Set("Content-Length", strconv.Itoa(len(w.buf)))
		}
		w.commitLocked()
	}
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.ErrUnexpectedEOF // a body cut short reads as a dropped connection
	}
	w.body.close(err)
}

func (w *memWriter) response(req *http.Request, cancel context.CancelFunc) *http.Response {
	resp := &http.Response{
		Status:        strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        w.sent,
		ContentLength: -1,
		Request:       req,
	}
	if n, err := strconv.ParseInt(w.sent.Get("Content-Length"), 10, 64); err == nil {
		resp.ContentLength = n
	}
	if w.head || !bodyAllowed(w.status) {
		resp.Body = http.NoBody
		w.body.closeRead()
		// The handler may still be running (it flushed): it finds out through its context.
		cancel()
		if !w.head {
			resp.ContentLength = 0
		}
		return resp
	}
	resp.Body = &memBody{p: w.body, cancel: cancel}
	return resp
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// memBody is the client's end of the response body. Closing it before EOF cancels the handler's
// context, as a closed connection does.
type memBody struct {
	p      *pipe
	cancel context.CancelFunc
	once   sync.Once
}

func (b *memBody) Read(p []byte) (int, error) { return b.p.read(p) }

func (b *memBody) Close() error {
	b.once.Do(func() {
		b.p.closeRead()
		b.cancel()
	})
	return nil
}

// pipe is an in-memory byte stream with an unbounded buffer, so that a handler finishes without
// waiting for the client to read, as it would with a socket's buffers. Readers wait on a channel, which
// a testing/synctest bubble counts as durably blocked.
type pipe struct {
	ctx    context.Context // the client's: reads stop waiting when it ends
	mu     sync.Mutex
	buf    []byte
	err    error // set by close: io.EOF or the cause
	rdone  bool  // the reader went away
	signal chan struct{}
}

func newPipe(ctx context.Context) *pipe { return &pipe{ctx: ctx, signal: make(chan struct{}, 1)} }

func (p *pipe) notify() {
	select {
	case p.signal <- struct{}{}:
	default:
	}
}

func (p *pipe) write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rdone {
		return 0, io.ErrClosedPipe
	}
	if p.err != nil {
		return 0, io.ErrClosedPipe
	}
	p.buf = append(p.buf, b...)
	p.notify()
	return len(b), nil
}

// close ends the stream: readers get io.EOF when err is nil, else err, after the buffered bytes.
func (p *pipe) close(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return
	}
	if err == nil {
		err = io.EOF
	}
	p.err = err
	p.notify()
}

func (p *pipe) closeRead() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rdone = true
	p.buf = nil
}

func (p *pipe) read(b []byte) (int, error) {
	for {
		p.mu.Lock()
		if p.rdone {
			p.mu.Unlock()
			return 0, errors.New("chassistest: read on closed response body")
		}
		if len(p.buf) > 0 {
			n := copy(b, p.buf)
			p.buf = p.buf[n:]
			if len(p.buf) == 0 {
				p.buf = nil
			}
			p.mu.Unlock()
			return n, nil
		}
		if p.err != nil {
			err := p.err
			p.mu.Unlock()
			return 0, err
		}
		p.mu.Unlock()
		if err := p.ctx.Err(); err != nil {
			return 0, err
		}
		select {
		case <-p.signal:
		case <-p.ctx.Done(): // look at the buffer once more, then fail
		}
	}
}
