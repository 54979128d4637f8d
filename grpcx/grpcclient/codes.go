package grpcclient

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/internal/grpcwire"
	"github.com/cloudchassis/kit/resilience"
)

// The client's policies (package resilience and discovery/lb) read every attempt through one
// discovery.Classifier, written for HTTP responses. A gRPC attempt is shown to them as the HTTP
// status of its code (httpStatus), with the code itself in the HeaderGRPCStatus header: the default
// classifier, CLIENT_<NAME>_RETRY_ON and resilience.WithClassifier then work unchanged.

// Header names of the response a classifier sees for a gRPC attempt.
const (
	// HeaderGRPCStatus holds the attempt's gRPC code as a decimal number ("14" for UNAVAILABLE).
	HeaderGRPCStatus = "Grpc-Status"
	// PushbackTrailer is the trailer by which a server asks a client to wait before retrying (gRPC
	// A6), in milliseconds; negative or malformed means "do not retry".
	PushbackTrailer = grpcwire.Pushback
)

// httpStatus is the HTTP status that stands for a gRPC code, as in grpc-gateway's mapping, with
// one difference: CANCELLED is 499 (the caller gave up), never a failure of the callee.
var httpStatus = [...]int{
	codes.OK:                 http.StatusOK,
	codes.Canceled:           499,
	codes.Unknown:            http.StatusInternalServerError,
	codes.InvalidArgument:    http.StatusBadRequest,
	codes.DeadlineExceeded:   http.StatusGatewayTimeout,
	codes.NotFound:           http.StatusNotFound,
	codes.AlreadyExists:      http.StatusConflict,
	codes.PermissionDenied:   http.StatusForbidden,
	codes.ResourceExhausted:  http.StatusTooManyRequests,
	codes.FailedPrecondition: http.StatusBadRequest,
	codes.Aborted:            http.StatusConflict,
	codes.OutOfRange:         http.StatusBadRequest,
	codes.Unimplemented:      http.StatusNotImplemented,
	codes.Internal:           http.StatusInternalServerError,
	codes.Unavailable:        http.StatusServiceUnavailable,
	codes.DataLoss:           http.StatusInternalServerError,
	codes.Unauthenticated:    http.StatusUnauthorized,
}

// HTTPStatus returns the HTTP status a classifier sees for code (the table in docs/grpc.md#clients):
// UNAVAILABLE 503, DEADLINE_EXCEEDED 504, RESOURCE_EXHAUSTED 429, UNKNOWN, INTERNAL and DATA_LOSS
// 500, UNIMPLEMENTED 501, CANCELLED 499, the client errors 4xx, OK 200. It is the number to write
// in CLIENT_<NAME>_RETRY_ON.
func HTTPStatus(c codes.Code) int {
	if int(c) < len(httpStatus) {
		return httpStatus[c]
	}
	return http.StatusInternalServerError
}

// Code returns the gRPC code of an attempt's result as a classifier receives it: from the
// HeaderGRPCStatus header of a response, or from the status of an error (codes.Unknown when it has none).
// Custom classifiers (resilience.WithClassifier) use it to tell codes that share an HTTP status
// apart, such as INTERNAL and UNKNOWN.
func Code(resp *http.Response, err error) codes.Code {
	if err != nil {
		return status.Code(err)
	}
	if resp == nil {
		return codes.OK
	}
	if v, e := strconv.Atoi(resp.Header.Get(HeaderGRPCStatus)); e == nil {
		return codes.Code(v)
	}
	return codes.Unknown
}

// response makes the response a classifier sees for an attempt that ended with st, with the
// server's pushback as Retry-After: A6's trailer, else a google.rpc.RetryInfo detail.
func response(st *status.Status, trailer metadata.MD) *http.Response {
	c := st.Code()
	if int(c) >= len(codeHeaders) {
		c = codes.Unknown
	}
	h := codeHeaders[c] // shared: the layers above read a response's header, never write it
	if c == codes.ResourceExhausted || c == codes.Unavailable {
		if d, ok := pushback(st, trailer); ok {
			h = http.Header{HeaderGRPCStatus: h[HeaderGRPCStatus], "Retry-After": {retryAfter(d)}}
		}
	}
	code := httpStatus[c]
	return &http.Response{StatusCode: code, Status: statusText[c], Header: h, Body: http.NoBody,
		Proto: "HTTP/2.0", ProtoMajor: 2}
}

// codeHeaders and statusText are the header and status line of each code's response, made once.
var codeHeaders, statusText = func() (h [len(httpStatus)]http.Header, s [len(httpStatus)]string) {
	for c := range h {
		h[c] = http.Header{HeaderGRPCStatus: {strconv.Itoa(c)}}
		s[c] = strconv.Itoa(httpStatus[c])
	}
	return h, s
}()

// pushback returns the delay the server asked for; a negative one means "do not retry".
func pushback(st *status.Status, trailer metadata.MD) (time.Duration, bool) {
	if v := trailer.Get(PushbackTrailer); len(v) > 0 {
		ms, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil || ms < 0 {
			return -1, true
		}
		return time.Duration(ms) * time.Millisecond, true
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// retryAfter writes d as a Retry-After value: whole seconds, rounded up (HTTP's resolution), and a
// delay longer than any RETRY_AFTER_MAX for "do not retry".
func retryAfter(d time.Duration) string {
	if d < 0 {
		return strconv.Itoa(math.MaxInt32)
	}
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// classTable is the Class of each code under a classifier, for the outcomes of streams (picked by
// the gRPC picker, reported by its Done callback with an error only).
func classTable(classify discovery.Classifier) [len(httpStatus)]discovery.Class {
	var t [len(httpStatus)]discovery.Class
	for c := range t {
		t[c] = classify(response(status.New(codes.Code(c), ""), nil), nil)
	}
	return t
}

// classedError gives a stream's final status the Class of its code, for Endpoint.Done.
type classedError struct {
	err   error
	class discovery.Class
}

func (e *classedError) Error() string              { return e.err.Error() }
func (e *classedError) Unwrap() error              { return e.err }
func (e *classedError) Class() discovery.Class     { return e.class }
func (e *classedError) GRPCStatus() *status.Status { return status.Convert(e.err) }

// callError is the error a call returns when the client's policies refused or ended it: its gRPC
// status for the caller's status.Code, and the cause for errors.Is (resilience.ErrBreakerOpen,
// lb.ErrNoInstances, ...).
type callError struct {
	st  *status.Status
	err error
}

func (e *callError) Error() string              { return e.st.Err().Error() }
func (e *callError) Unwrap() error              { return e.err }
func (e *callError) GRPCStatus() *status.Status { return e.st }

// toStatus turns an error of the policies into the gRPC status the call returns:
//
//	context.Canceled                                       CANCELLED
//	a timeout (resilience.ErrTimeout, the caller's deadline,
//	  resilience.ErrDeadlineTooShort)                      DEADLINE_EXCEEDED
//	resilience.ErrBulkheadFull                             RESOURCE_EXHAUSTED
//	resilience.ErrBreakerOpen, lb.ErrNoInstances, an
//	  instance not connected, any other                    UNAVAILABLE
//
// An error that carries a gRPC status keeps it.
func toStatus(err error) error {
	var code codes.Code
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, resilience.ErrBulkheadFull):
		code = codes.ResourceExhausted
	case errors.Is(err, resilience.ErrBreakerOpen), errors.Is(err, lb.ErrNoInstances):
		code = codes.Unavailable
	default:
		var gs interface{ GRPCStatus() *status.Status }
		if errors.As(err, &gs) {
			code = gs.GRPCStatus().Code()
			return &callError{st: status.New(code, err.Error()), err: err}
		}
		code = codes.Unavailable
	}
	return &callError{st: status.New(code, err.Error()), err: err}
}
