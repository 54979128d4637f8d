package chassistest

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// FaultHeader is set on responses that a Fail fault made up, so that a test (or a curious human
// reading a dump) can tell them from the service's own.
const FaultHeader = "X-Chassistest-Fault"

// A Fault decides what happens to one request on its way to next: pass it on (perhaps late), or
// answer or fail in next's place. Faults are composable values; Script and Sometimes keep state
// (the position in the script, the random stream), so give each such value to one transport.
//
// A Fault that does not pass the request to next must close the request body, as a RoundTripper
// must. Faults wait with the request's context, so Latency and Blackhole follow a testing/synctest
// bubble's clock when the request is made inside one.
type Fault func(req *http.Request, next http.RoundTripper) (*http.Response, error)

// OK passes the request on unchanged.
func OK() Fault {
	return func(req *http.Request, next http.RoundTripper) (*http.Response, error) { return next.RoundTrip(req) }
}

// Latency delays the request by d, then passes it on. If the request's context ends first, the
// request fails with the context's error and never reaches next.
func Latency(d time.Duration) Fault {
	return func(req *http.Request, next http.RoundTripper) (*http.Response, error) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return next.RoundTrip(req)
		case <-req.Context().Done():
			closeBody(req)
			return nil, req.Context().Err()
		}
	}
}

// Fail answers in the service's place with status and a short text body, with FaultHeader set.
func Fail(status int) Fault {
	return func(req *http.Request, _ http.RoundTripper) (*http.Response, error) {
		closeBody(req)
		body := fmt.Sprintf("chassistest: injected fault: %d %s\n", status, http.StatusText(status))
		return &http.Response{
			Status:        strconv.Itoa(status) + " " + http.StatusText(status),
			StatusCode:    status,
			Proto:         "HTTP/1.1",
			ProtoMajor:    1,
			ProtoMinor:    1,
			Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}, FaultHeader: {"fail"}},
			Body:          io.NopCloser(bytes.NewReader([]byte(body))),
			ContentLength: int64(len(body)),
			Request:       req,
		}, nil
	}
}

// Reset fails the request as if the peer reset the connection: the error matches
// syscall.ECONNRESET (errors.Is) and is a *net.OpError, as net/http reports a real reset.
func Reset() Fault {
	return func(req *http.Request, _ http.RoundTripper) (*http.Response, error) {
		closeBody(req)
		return nil, opError("read", req, syscall.ECONNRESET)
	}
}

// Unreachable fails the request at once as if no route led to the peer (a network partition whose
// routers answer): the error matches syscall.EHOSTUNREACH and is a *net.OpError from "dial". For a
// partition that drops packets silently, use Blackhole.
func Unreachable() Fault {
	return func(req *http.Request, _ http.RoundTripper) (*http.Response, error) {
		closeBody(req)
		return nil, opError("dial", req, syscall.EHOSTUNREACH)
	}
}

// Blackhole never answers: the request hangs until its context ends, then fails with the context's
// error, like a call to a peer that silently drops packets. Without a deadline or cancellation on
// the request it hangs for good, as in production.
func Blackhole() Fault {
	return func(req *http.Request, _ http.RoundTripper) (*http.Response, error) {
		<-req.Context().Done()
		closeBody(req)
		return nil, req.Context().Err()
	}
}

// Sometimes applies f to each request with probability p (0 to 1) and passes the others on. The
// choices come from a PCG generator seeded with seed, so a test that sends its requests in a fixed
// order sees the same faults on every run.
func Sometimes(p float64, seed uint64, f Fault) Fault {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func(req *http.Request, next http.RoundTripper) (*http.Response, error) {
		mu.Lock()
		hit := rng.Float64() < p
		mu.Unlock()
		if hit {
			return f(req, next)
		}
		return next.RoundTrip(req)
	}
}

// ErrorRate fails a fraction p of the requests with 503 Service Unavailable: Sometimes(p, seed,
// Fail(503)).
func ErrorRate(p float64, seed uint64) Fault {
	return Sometimes(p, seed, Fail(http.StatusServiceUnavailable))
}

// Script applies steps[0] to the first request, steps[1] to the second, and so on; requests after the
// last step pass through. Script(Fail(503), Fail(503), OK()) is a dependency that recovers on the
// third attempt.
func Script(steps ...Fault) Fault {
	var n atomic.Int64
	return func(req *http.Request, next http.RoundTripper) (*http.Response, error) {
		i := n.Add(1) - 1
		if i < int64(len(steps)) && steps[i] != nil {
			return steps[i](req, next)
		}
		return next.RoundTrip(req)
	}
}

// Chain applies the faults in order, each passing the request to the next one: Chain(Latency(d),
// Fail(500)) answers 500 after d.
func Chain(faults ...Fault) Fault {
	return func(req *http.Request, next http.RoundTripper) (*http.Response, error) {
		rt := next
		for i := len(faults) - 1; i >= 0; i-- {
			if faults[i] != nil {
				rt = faultStep{f: faults[i], next: rt}
			}
		}
		return rt.RoundTrip(req)
	}
}

type faultStep struct {
	f    Fault
	next http.RoundTripper
}

func (s faultStep) RoundTrip(req *http.Request) (*http.Response, error) { return s.f(req, s.next) }

// faults holds the current fault of a transport, proxy or link, and counts the requests.
type faults struct {
	f        atomic.Pointer[Fault]
	requests atomic.Int64
}

func (s *faults) set(f Fault) {
	if f == nil {
		s.f.Store(nil)
		return
	}
	s.f.Store(&f)
}

func (s *faults) roundTrip(req *http.Request, next http.RoundTripper) (*http.Response, error) {
	s.requests.Add(1)
	if f := s.f.Load(); f != nil {
		return (*f)(req, next)
	}
	return next.RoundTrip(req)
}

// FaultTransport is an http.RoundTripper that applies a Fault to every request before (or instead
// of) passing it to the transport it wraps. Its fault can be changed at any time, also while
// requests are in flight (they keep the fault they started with). It is safe for concurrent use.
type FaultTransport struct {
	next http.RoundTripper
	faults
}

var _ http.RoundTripper = (*FaultTransport)(nil)

// NewFaultTransport returns a FaultTransport over next (http.DefaultTransport when nil) that passes
// every request on until Set gives it a fault.
func NewFaultTransport(next http.RoundTripper) *FaultTransport {
	if next == nil {
		next = http.DefaultTransport
	}
	return &FaultTransport{next: next}
}

// Set makes f the fault applied to the requests that start from now on; nil passes them through.
func (t *FaultTransport) Set(f Fault) { t.set(f) }

// Requests returns how many requests reached the transport, faulted or not.
func (t *FaultTransport) Requests() int { return int(t.requests.Load()) }

// RoundTrip implements http.RoundTripper.
func (t *FaultTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.roundTrip(req, t.next)
}

// CloseIdleConnections closes the idle connections of the wrapped transport, if it has any.
func (t *FaultTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// opError builds the error net/http returns for a failed socket operation on req's host.
func opError(op string, req *http.Request, errno syscall.Errno) error {
	syscallName := "read"
	if op == "dial" {
		syscallName = "connect"
	}
	return &net.OpError{Op: op, Net: "tcp", Addr: hostAddr(req.URL.Host), Err: os.NewSyscallError(syscallName, errno)}
}

// hostAddr is a net.Addr for an address that may not be an IP.
type hostAddr string

func (a hostAddr) Network() string { return "tcp" }
func (a hostAddr) String() string  { return string(a) }
