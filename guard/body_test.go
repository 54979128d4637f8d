package guard_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudchassis/kit/guard"
)

// pipeServer serves h over in-memory connections (net.Pipe), so that a test in a synctest bubble
// gets net/http's real connection handling, read deadlines included, in virtual time.
type pipeServer struct {
	conns chan net.Conn
	done  chan struct{}
	srv   *http.Server
	wg    sync.WaitGroup
}

func newPipeServer(h http.Handler) *pipeServer {
	p := &pipeServer{conns: make(chan net.Conn), done: make(chan struct{}),
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}}
	p.wg.Go(func() { _ = p.srv.Serve(p) })
	return p
}

func (p *pipeServer) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, net.ErrClosed
	}
}

func (p *pipeServer) Close() error {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	return nil
}

func (p *pipeServer) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

func (p *pipeServer) dial() net.Conn {
	c, s := net.Pipe()
	p.conns <- s
	return c
}

func (p *pipeServer) stop() {
	_ = p.srv.Close()
	p.wg.Wait()
	// A connection closed after an error answer (408, 429) lingers in net/http's closeWriteAndWait
	// for 500 ms; in a synctest bubble the clock stops when the test function returns, so wait here.
	time.Sleep(time.Second)
}

// post sends a POST with a body of n bytes, written in pieces of chunk bytes every gap, and
// returns the response status and when it arrived (from the start).
func (p *pipeServer) post(n, chunk int, gap time.Duration) (int, time.Duration) {
	start := time.Now()
	c := p.dial()
	defer c.Close()
	statusc := make(chan int, 1)
	go func() {
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			statusc <- -1
			return
		}
		statusc <- res.StatusCode // when the answer arrived: its body may end only when the server closes
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}()
	fmt.Fprintf(c, "POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", n)
	body := bytes.Repeat([]byte("x"), n)
	for len(body) > 0 {
		k := min(chunk, len(body))
		if _, err := c.Write(body[:k]); err != nil {
			break
		}
		body = body[k:]
		if len(body) > 0 {
			select {
			case st := <-statusc:
				return st, time.Since(start)
			case <-time.After(gap):
			}
		}
	}
	st := <-statusc
	return st, time.Since(start)
}

// readAll is a JSON-route-like handler: it reads the body, then answers 200.
func readAll(work time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		time.Sleep(work)
		w.WriteHeader(http.StatusOK)
	})
}

// TestBodyGateSlowBodiesHoldNoSlot is the slow-body attack: more connections trickling a body at
// 1 byte/s than the shedder's limit. Behind the gate they hold no slot, and are cut off with 408
// once below the minimum rate; every legitimate request is served meanwhile.
func TestBodyGateSlowBodiesHoldNoSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := guard.DefaultShedConfig()
		cfg.InitialLimit, cfg.MinLimit, cfg.MaxLimit = 4, 4, 4
		shed := must(guard.NewShedder(cfg))
		gate := must(guard.NewBodyGate(guard.BodyConfig{MaxTime: 30 * time.Second}))
		srv := newPipeServer(gate.Middleware(shed.Middleware(readAll(10 * time.Millisecond))))
		defer srv.stop()

		var wg sync.WaitGroup
		slow := make(chan int, 15)
		for range 15 {
			wg.Go(func() {
				st, took := srv.post(100, 1, time.Second)
				if took > 6*time.Second {
					t.Errorf("slow body cut off after %v, want about the 5 s grace", took)
				}
				slow <- st
			})
		}
		synctest.Wait()
		time.Sleep(time.Second)
		if n := shed.Inflight(); n != 0 {
			t.Errorf("%d requests in flight while only slow bodies arrive: waiting on a client took a slot", n)
		}
		legit := make(chan int, 40)
		for range 40 {
			wg.Go(func() {
				st, _ := srv.post(200, 200, 0)
				legit <- st
			})
			time.Sleep(100 * time.Millisecond)
		}
		wg.Wait()
		close(slow)
		close(legit)
		for st := range legit {
			if st != http.StatusOK {
				t.Errorf("legitimate request: status %d during the slow-body attack", st)
			}
		}
		for st := range slow {
			if st != http.StatusRequestTimeout {
				t.Errorf("slow body: status %d, want 408", st)
			}
		}
	})
}

// TestBodyGateMinimumRate: the deadline moves with the bytes received, so a body that keeps up the
// minimum rate may take longer than the grace; one that falls below it is cut off at
// grace + received/rate.
func TestBodyGateMinimumRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := must(guard.NewBodyGate(guard.BodyConfig{MinRate: 1000, Grace: 2 * time.Second, MaxTime: 30 * time.Second}))
		srv := newPipeServer(gate.Middleware(readAll(0)))
		defer srv.stop()

		// 2000 bytes/s for 10 s: twice the minimum rate.
		if st, took := srv.post(20_000, 200, 100*time.Millisecond); st != http.StatusOK || took < 9*time.Second {
			t.Errorf("body at twice the minimum rate: status %d after %v, want 200 after about 10 s", st, took)
		}
		// 500 bytes/s: the deadline is 2 s + received/1000, so the body falls behind at 4 s. Since
		// go1.26.9, net/http delivers an answer to a request whose body is still arriving only after
		// its 500 ms close delay (rstAvoidanceDelay), hence up to 4.6 s.
		const closeDelay = 600 * time.Millisecond
		st, took := srv.post(20_000, 50, 100*time.Millisecond)
		if st != http.StatusRequestTimeout || took < 3900*time.Millisecond || took > 4200*time.Millisecond+closeDelay {
			t.Errorf("body at half the minimum rate: status %d after %v, want 408 after about 4 s", st, took)
		}
		// MaxTime caps the deadline, whatever the rate.
		gate2 := must(guard.NewBodyGate(guard.BodyConfig{MinRate: 1000, Grace: 2 * time.Second, MaxTime: 3 * time.Second}))
		srv2 := newPipeServer(gate2.Middleware(readAll(0)))
		defer srv2.stop()
		if st, took := srv2.post(20_000, 200, 100*time.Millisecond); st != http.StatusRequestTimeout || took > 3100*time.Millisecond+closeDelay {
			t.Errorf("body beyond MaxTime: status %d after %v, want 408 after 3 s", st, took)
		}
	})
}

// TestBodyGateLeavesNoDeadlineAfterBody: once the body is read, the gate stops setting deadlines.
// A minimum-rate deadline set then would fire during net/http's background read (which watches
// for the client going away) and cancel the context of a handler that works longer than the grace.
func TestBodyGateLeavesNoDeadlineAfterBody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gate := must(guard.NewBodyGate(guard.BodyConfig{Grace: time.Second, MaxTime: 30 * time.Second}))
		srv := newPipeServer(gate.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.ReadAll(r.Body); err != nil {
				t.Errorf("read: %v", err)
			}
			select {
			case <-time.After(10 * time.Second):
				w.WriteHeader(http.StatusOK)
			case <-r.Context().Done():
				t.Errorf("request context canceled while the handler worked: %v", context.Cause(r.Context()))
				w.WriteHeader(http.StatusInternalServerError)
			}
		})))
		defer srv.stop()
		if st, _ := srv.post(100, 100, 0); st != http.StatusOK {
			t.Errorf("status %d", st)
		}
	})
}

// TestBodyGatePerPeer: one client address may have PerPeer bodies in progress; the next is refused
// at once with 429, and other clients are not affected.
func TestBodyGatePerPeer(t *testing.T) {
	gate := must(guard.NewBodyGate(guard.BodyConfig{PerPeer: 2}))
	h := gate.Middleware(readAll(0))
	var writers []*io.PipeWriter
	var wg sync.WaitGroup
	for range 2 {
		pr, pw := io.Pipe()
		writers = append(writers, pw)
		r := httptest.NewRequest("POST", "/items", pr)
		r.RemoteAddr = "192.0.2.1:1000"
		wg.Go(func() { h.ServeHTTP(httptest.NewRecorder(), r) })
	}
	// Wait until both are reading (blocked on their pipes).
	for _, pw := range writers {
		if _, err := pw.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	r := httptest.NewRequest("POST", "/items", strings.NewReader("{}"))
	r.RemoteAddr = "192.0.2.1:1001"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" || rec.Header().Get("Connection") != "close" {
		t.Errorf("third body from one client: %d %v, want 429 with Retry-After and Connection: close", rec.Code, rec.Header())
	}
	r = httptest.NewRequest("POST", "/items", strings.NewReader("{}"))
	r.RemoteAddr = "192.0.2.2:1000"
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		t.Errorf("another client: %d, want 200", rec.Code)
	}
	for _, pw := range writers {
		pw.Close()
	}
	wg.Wait()
	// The slots were given back.
	r = httptest.NewRequest("POST", "/items", strings.NewReader("{}"))
	r.RemoteAddr = "192.0.2.1:1002"
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		t.Errorf("after the first two finished: %d, want 200", rec.Code)
	}
}

// TestBodyGateDeliversBodies: whatever path a body takes (buffered, over the buffer size, chunked
// past the buffer, beyond the memory budget, failed), the handler reads exactly what was sent, or
// the error it would have seen without the gate.
func TestBodyGateDeliversBodies(t *testing.T) {
	payload := func(n int) string { return strings.Repeat("0123456789", n/10+1)[:n] }
	tooLarge := errors.New("too large")
	for _, tc := range []struct {
		name    string
		cfg     guard.BodyConfig
		body    string
		chunked bool
		fail    error
	}{
		{name: "small", body: payload(100)},
		{name: "exactly the buffer", cfg: guard.BodyConfig{BufferBytes: 4096}, body: payload(4096)},
		{name: "declared over the buffer", cfg: guard.BodyConfig{BufferBytes: 1000}, body: payload(50_000)},
		{name: "chunked under the buffer", body: payload(30_000), chunked: true},
		{name: "chunked over the buffer", cfg: guard.BodyConfig{BufferBytes: 10_000}, body: payload(50_000), chunked: true},
		{name: "over the memory budget", cfg: guard.BodyConfig{BufferTotal: 5000}, body: payload(50_000)},
		{name: "read error", body: payload(100), fail: tooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gate := must(guard.NewBodyGate(tc.cfg))
			var got string
			var gotErr error
			h := gate.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				got, gotErr = string(b), err
			}))
			var body io.Reader = strings.NewReader(tc.body)
			if tc.fail != nil {
				body = io.MultiReader(body, errReader{tc.fail})
			}
			r := httptest.NewRequest("POST", "/", body)
			r.ContentLength = int64(len(tc.body))
			if tc.chunked {
				r.ContentLength = -1
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			if got != tc.body {
				t.Errorf("handler read %d bytes, want the %d sent", len(got), len(tc.body))
			}
			if !errors.Is(gotErr, tc.fail) {
				t.Errorf("handler's read error %v, want %v", gotErr, tc.fail)
			}
		})
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestBodyGateNoBodyAllocatesNothing: requests without a body pass through untouched.
func TestBodyGateNoBodyAllocatesNothing(t *testing.T) {
	gate := must(guard.NewBodyGate(guard.BodyConfig{}))
	h := gate.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	r := httptest.NewRequest("GET", "/", nil)
	w := httptest.NewRecorder()
	if n := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, r) }); n != 0 {
		t.Errorf("%v allocations per request without a body", n)
	}
}
