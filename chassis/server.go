package chassis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cloudchassis/kit/problem"
	"go.opentelemetry.io/otel/trace"
)

// RequestIDHeader carries a request's id in and out.
const RequestIDHeader = "X-Request-Id"

type requestIDKey struct{}

// RequestID returns the id of the request whose context ctx is, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// Handle registers a handler for a ServeMux pattern ("GET /items/{id}") on the public server, wrapped
// in the default middleware. Call it before Run.
//
// The chain is built once per route, outer to inner: telemetry (span, RED metrics with the route
// template, access log), panic recovery, request id, WithMiddleware's, body size limit, request
// deadline. Building it per route lets telemetry precompute the route's attributes, and puts the
// route in the metrics even for a panicking handler.
func (s *Service) Handle(pattern string, h http.Handler) {
	chain := h
	chain = s.deadline(chain)
	chain = s.bodyLimit(chain)
	for i := len(s.opts.middleware) - 1; i >= 0; i-- {
		chain = s.opts.middleware[i](chain)
	}
	chain = requestID(chain)
	chain = s.recoverer(chain)
	chain = s.tel.Handler(chain)
	s.mux.Handle(pattern, chain)
	s.routes = append(s.routes, pattern)
}

// HandleFunc is Handle for a function.
func (s *Service) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	s.Handle(pattern, http.HandlerFunc(h))
}

func (s *Service) newPublicServer() *http.Server {
	st := s.settings
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

// recoverer turns a panic into a 500 problem response and an error log with the stack.
// http.ErrAbortHandler keeps its meaning: the connection is dropped.
func (s *Service) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackingWriter{ResponseWriter: w}
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.tel.For(r.Context()).Error("handler panicked",
				zap.String("route", r.Pattern), zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
			if tw.wrote {
				panic(http.ErrAbortHandler) // too late for a clean answer: drop the connection
			}
			problem.Write(w, http.StatusInternalServerError, "", "the server hit an unexpected condition")
		}()
		next.ServeHTTP(tw, r)
	})
}

// trackingWriter records whether the response has started. It keeps http.ResponseController working
// through Unwrap.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
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

// requestID takes a well-formed X-Request-Id from the caller, else the trace id, else a random id,
// and echoes it on the response.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			if sc := trace.SpanContextFromContext(r.Context()); sc.HasTraceID() {
				id = sc.TraceID().String()
			} else {
				id = randomHex(16)
			}
		}
		w.Header().Set(RequestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// validRequestID accepts up to 128 visible ASCII characters, so that a caller cannot inject log lines
// or huge values.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// bodyLimit answers 413 at once when Content-Length is over the limit and caps the body otherwise,
// so that a chunked body over the limit fails the handler's read with *http.MaxBytesError.
func (s *Service) bodyLimit(next http.Handler) http.Handler {
	limit := int64(s.settings.MaxBodyBytes)
	detail := fmt.Sprintf("the request body exceeds the limit of %s", s.settings.MaxBodyBytes)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			w.Header().Set("Connection", "close") // the unread body must not be parsed as a request
			problem.Write(w, http.StatusRequestEntityTooLarge, "", detail)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		next.ServeHTTP(w, r)
	})
}

// deadline gives the request context the HTTP_REQUEST_TIMEOUT deadline.
func (s *Service) deadline(next http.Handler) http.Handler {
	d := s.settings.RequestTimeout
	if d <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// IsBodyTooLarge reports whether err comes from reading a body over HTTP_MAX_BODY_BYTES; answer 413.
func IsBodyTooLarge(err error) bool {
	var mbe *http.MaxBytesError
	return errors.As(err, &mbe)
}

func since(t time.Time) string { return strconv.FormatFloat(time.Since(t).Seconds(), 'f', 3, 64) }
