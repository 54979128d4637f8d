package chassistest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proxy is an HTTP reverse proxy on a loopback port that applies a Fault to what it relays, over
// real TCP: a client talking to it sees genuine connection resets (Reset, Unreachable), stalls
// (Blackhole, Latency) and injected statuses (Fail). Put it in front of a service, or register its
// address in a Cluster's registry in place of the service's.
//
// A Proxy is safe for concurrent use. NewProxy closes it when the test ends.
type Proxy struct {
	faults
	target    *url.URL
	ln        net.Listener
	srv       *http.Server
	transport *http.Transport
	inflight  sync.WaitGroup
	closeOnce sync.Once
	closing   chan struct{}
}

// NewProxy starts a proxy to target ("127.0.0.1:8080" or "http://127.0.0.1:8080") on
// 127.0.0.1 with an ephemeral port. It passes every request on until Set gives it a fault.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		tb.Fatalf("chassistest: proxy target %q: want host:port or an http URL", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("chassistest: proxy: %v", err)
	}
	p := &Proxy{target: u, ln: ln, closing: make(chan struct{})}
	p.transport = http.DefaultTransport.(*http.Transport).Clone()
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host // the service sees the host its caller used
		},
		Transport:    proxyTransport{p},
		ErrorHandler: p.fail,
	}
	p.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p.inflight.Add(1)
			defer p.inflight.Done()
			rp.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = p.srv.Serve(ln) }()
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

type proxyTransport struct{ p *Proxy }

func (t proxyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// A blackholed request also ends when the proxy closes, so that Close does not wait for clients
	// that never give up.
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	go func() {
		select {
		case <-t.p.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	return t.p.roundTrip(req.WithContext(ctx), t.p.transport)
}

// fail answers when the fault or the upstream failed: injected resets and unreachable peers become
// a TCP reset of the client's connection, as does a request cut by Close; anything else a 502.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, err error) {
	closing := false
	select {
	case <-p.closing:
		closing = true
	default:
	}
	if closing || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EHOSTUNREACH) || r.Context().Err() != nil {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, herr := hj.Hijack(); herr == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // close with RST, not FIN
				}
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	w.WriteHeader(http.StatusBadGateway)
}

// Set makes f the fault applied to requests that start from now on; nil relays them unchanged.
func (p *Proxy) Set(f Fault) { p.set(f) }

// Requests returns how many requests the proxy received.
func (p *Proxy) Requests() int { return int(p.requests.Load()) }

// Addr returns the proxy's address, 127.0.0.1:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL returns http://127.0.0.1:port.
func (p *Proxy) URL() string { return "http://" + p.Addr() }

// Close stops the proxy: it closes the listener and every connection, ends blackholed requests, and
// waits for the requests in flight. It is idempotent.
func (p *Proxy) Close() error {
	var err error
	p.closeOnce.Do(func() {
		err = p.srv.Close()
		close(p.closing)
		p.inflight.Wait()
		p.transport.CloseIdleConnections()
	})
	return err
}
