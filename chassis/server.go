package chassis

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/grpcx"
	"github.com/cloudchassis/kit/internal/reqctx"
	"github.com/cloudchassis/kit/internal/requestid"
	"github.com/cloudchassis/kit/problem"
	"github.com/cloudchassis/kit/resilience"
	"go.opentelemetry.io/otel/trace"
)

// RequestIDHeader carries a request's id in and out.
const RequestIDHeader = "X-Request-Id"

type requestIDKey struct{}

// RequestID returns the id of the request (or gRPC call) whose context ctx is, or "". When the caller sent no
// X-Request-Id, the id is the trace id, which the context already carries: nothing is stored then,
// which saves an allocation per request.
func RequestID(ctx context.Context) string {
	if id, ok := ctx.Value(requestIDKey{}).(string); ok {
		return id
	}
	if id := grpcx.RequestID(ctx); id != "" {
		return id
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

// Handle registers a handler for a ServeMux pattern ("GET /items/{id}") on the public server, wrapped
// in the default middleware. Call it before Run and Handler: they add a catch-all "/" route for
// requests no pattern matches (see handleUnmatched), unless "/" was registered.
//
// The chain is built once per route, outer to inner: telemetry (span, RED metrics with the route
// template, access log); the chassis core (panic recovery, request id, body size limit, request
// deadline, in one wrapper so that the request is copied once); the body gate (bodies up to
// HTTP_BODY_BUFFER_BYTES read before admission under a minimum rate, so that waiting on a slow
// client holds no shedder slot); adaptive load shedding; the TLS peer identity (mutual TLS);
// bearer-token authentication; rate limiting per caller (after authentication, so that it keys on
// the verified subject, never on a forgeable one); WithMiddleware's; the handler.
// Building it per route lets telemetry precompute the route's attributes, and puts the route in the
// metrics even for a panicking handler.
func (s *Service) Handle(pattern string, h http.Handler) {
	chain := h
	for i := len(s.opts.middleware) - 1; i >= 0; i-- {
		chain = s.opts.middleware[i](chain)
	}
	chain = s.limiter.Middleware(chain)
	if s.verifier != nil {
		chain = s.verifier.Middleware(chain)
	}
	if s.settings.TLSConfig.Enabled() && s.settings.ClientCAFile != "" {
		chain = auth.PeerIdentity(chain)
	}
	chain = s.shedder.Middleware(chain)
	chain = s.bodies.Middleware(chain)
	chain = s.core(chain)
	chain = s.tel.Handler(chain)
	s.mux.Handle(pattern, chain)
	s.probe.Handle(pattern, http.NotFoundHandler()) // never served: only its 404/405 decisions are
	s.routes = append(s.routes, pattern)
}

// Handler returns the public server's handler with every route and its middleware, for serving in
// process (benchmarks, httptest) without Run. Health, metrics and pprof are not on it. Register
// every route before calling it.
func (s *Service) Handler() http.Handler {
	s.handleUnmatched()
	return s.mux
}

// handleUnmatched installs, once, a catch-all "/" route so that requests no pattern matches (404s,
// 405s, scanners) are traced, counted under http.route "unmatched" and logged like the others, with
// a request id; unless the service registered "/" itself. The decision stays what a ServeMux makes
// (404, or 405 with Allow when the path exists for other methods): the probe mux, which holds the
// same patterns, makes it, and its text answer is rewritten as problem+json with the same status and
// headers, like every other error of the public server. A catch-all costs matched requests nothing,
// where asking the mux first whether a request matches would cost every request a second lookup
// (~280 ns and an allocation).
func (s *Service) handleUnmatched() {
	s.unmatch.Do(func() {
		if slices.Contains(s.routes, "/") {
			return
		}
		probe := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.probe.ServeHTTP(&problemAnswer{ResponseWriter: w}, r)
		})
		chain := s.tel.Handler(s.core(probe))
		s.mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r.Pattern = "" // the catch-all is not a route: telemetry records the request as unmatched
			chain.ServeHTTP(w, r)
		}))
	})
}

// HandleFunc is Handle for a function.
func (s *Service) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	s.Handle(pattern, http.HandlerFunc(h))
}

func (s *Service) newPublicServer() *http.Server {
	st := s.settings
	s.handleUnmatched()
	return &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: st.ReadHeaderTimeout,
		ReadTimeout:       st.ReadTimeout,
		WriteTimeout:      st.WriteTimeout,
		IdleTimeout:       st.IdleTimeout,
		MaxHeaderBytes:    int(st.MaxHeaderBytes),
		ErrorLog:          s.stdLog("public"),
	}
}

func (s *Service) stdLog(server string) *log.Logger {
	l, err := zap.NewStdLogAt(s.log.With(zap.String("server", server)), zapcore.WarnLevel)
	if err != nil {
		return nil
	}
	return l
}

// core is recovery, request id, header-field and body limits and deadline in one wrapper.
//
// Recovery: a panic becomes a 500 problem response and an error log with the stack;
// http.ErrAbortHandler keeps its meaning (the connection is dropped), and so does a panic after the
// response started. Request id: a well-formed X-Request-Id from the caller, else the trace id, else
// a random id, echoed on the response. Header fields: 431 when the request has more distinct header
// names than HTTP_MAX_HEADER_FIELDS. Body limit: 413 at once when Content-Length is over the limit;
// otherwise the body is capped, so that a chunked body over the limit fails the handler's read with
// *http.MaxBytesError. Deadline: the caller's propagated deadline (resilience.TimeoutHeader), capped
// by HTTP_REQUEST_TIMEOUT (resilience.PropagatedTimeout), on the request context, lazily
// (reqctx.Context).
func (s *Service) core(next http.Handler) http.Handler {
	limit := int64(s.settings.MaxBodyBytes)
	tooLarge := fmt.Sprintf("the request body exceeds the limit of %s", s.settings.MaxBodyBytes)
	timeout := s.settings.RequestTimeout
	maxFields := s.settings.MaxHeaderFields
	tooManyFields := fmt.Sprintf("the request has more than %d distinct header names", maxFields)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := &coreState{} // the writer wrapper and the context layer in one allocation
		tw := &st.w
		tw.ResponseWriter = w
		defer func() {
			if p := recover(); p != nil {
				s.recovered(tw, r, p)
			}
		}()

		ctx := r.Context()
		id := r.Header.Get(RequestIDHeader)
		var ownID string
		if validRequestID(id) {
			ownID = id
		} else if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
			id = tw.traceHex(sc.TraceID())
		} else {
			id = randomHex(16)
			ownID = id
		}
		tw.idHeader[0] = id
		w.Header()[RequestIDHeader] = tw.idHeader[:]

		if len(r.Header) > maxFields {
			// net/http bounds the header's bytes (HTTP_MAX_HEADER_BYTES), not its fields: 64 KiB of
			// distinct short names is thousands of map entries per request for the handler's code to walk.
			w.Header().Set("Connection", "close")
			problem.Write(w, http.StatusRequestHeaderFieldsTooLarge, "", tooManyFields)
			return
		}
		if r.ContentLength > limit {
			w.Header().Set("Connection", "close") // the unread body must not be parsed as a request
			problem.Write(w, http.StatusRequestEntityTooLarge, "", tooLarge)
			return
		}
		st.ctx.Init(ctx, requestIDKey{}, ownID, time.Now(), resilience.PropagatedTimeout(r.Header, timeout))
		defer st.ctx.Release()
		// core is always the direct child of telemetry's Handler (Handle, handleUnmatched), which
		// made r, a copy, for this chain alone: core replaces that copy's context in place (the
		// compiler keeps WithContext's copy on the stack) instead of copying 250 bytes once more.
		*r = *r.WithContext(&st.ctx)
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		var rw http.ResponseWriter = tw
		if _, ok := w.(http.Hijacker); ok {
			rw = (*h1TrackingWriter)(tw)
		}
		next.ServeHTTP(rw, r)
	})
}

// coreState is the chassis core's per-request state.
type coreState struct {
	w   trackingWriter
	ctx reqctx.Context
}

func (s *Service) recovered(tw *trackingWriter, r *http.Request, p any) {
	if p == http.ErrAbortHandler {
		panic(p)
	}
	s.tel.For(r.Context()).Error("handler panicked",
		zap.String("route", r.Pattern), zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
	if tw.wrote {
		panic(http.ErrAbortHandler) // too late for a clean answer: drop the connection
	}
	problem.Write(tw.ResponseWriter, http.StatusInternalServerError, "", "the server hit an unexpected condition")
}

// trackingWriter records whether the response has started. It keeps http.ResponseController working
// through Unwrap.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool

	// The request id's text and header value live here, in the wrapper every request allocates
	// anyway, rather than in two allocations of their own.
	idText   [32]byte
	idHeader [1]string
}

func (w *trackingWriter) WriteHeader(code int) {
	if code >= 200 {
		w.wrote = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

func (w *trackingWriter) Flush() {
	w.wrote = true
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ReadFrom keeps io.Copy(w, src) on the writer's own ReadFrom (telemetry's, then net/http's, which
// copies with a pooled buffer or sends a file with sendfile): without it, io.Copy would see a
// writer with no ReadFrom and allocate a 32 KiB buffer per call, the largest allocation of a
// gateway's request (BENCHMARKS.md, issue 15).
func (w *trackingWriter) ReadFrom(src io.Reader) (int64, error) {
	w.wrote = true
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
}

// h1TrackingWriter is trackingWriter on a connection that can be hijacked (HTTP/1): it adds Hijack,
// so that a handler's w.(http.Hijacker) (WebSocket libraries) succeeds exactly where hijacking works.
type h1TrackingWriter trackingWriter

func (w *h1TrackingWriter) Header() http.Header         { return w.ResponseWriter.Header() }
func (w *h1TrackingWriter) WriteHeader(code int)        { (*trackingWriter)(w).WriteHeader(code) }
func (w *h1TrackingWriter) Write(b []byte) (int, error) { return (*trackingWriter)(w).Write(b) }
func (w *h1TrackingWriter) Flush()                      { (*trackingWriter)(w).Flush() }
func (w *h1TrackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
func (w *h1TrackingWriter) ReadFrom(src io.Reader) (int64, error) {
	return (*trackingWriter)(w).ReadFrom(src)
}

func (w *h1TrackingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.wrote = true // the connection is the handler's: recovery must not answer on it
	return w.ResponseWriter.(http.Hijacker).Hijack()
}

// traceHex returns the trace id in hex without allocating: the string points into w.idText, which
// is written once, here, and never changed, so the string stays immutable for as long as anything
// (the header map, a log line) refers to it.
func (w *trackingWriter) traceHex(id trace.TraceID) string {
	hex.Encode(w.idText[:], id[:])
	return unsafe.String(&w.idText[0], len(w.idText))
}

func validRequestID(id string) bool { return requestid.Valid(id) }

func randomHex(n int) string { return requestid.Random(n) }

// IsBodyTooLarge reports whether err comes from reading a body over HTTP_MAX_BODY_BYTES; answer 413.
func IsBodyTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}
