package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/problem"
	"github.com/cloudchassis/kit/resilience"
)

// StatusClientClosed is the status recorded when the caller went away before the answer (nginx's
// 499): not the callee's failure, so it is not counted as a 5xx.
const StatusClientClosed = 499

// router forwards a request to the service its Host or first path segment names, through that
// service's client. The set of services it keeps clients for is bounded: the names of
// AMBASSADOR_ROUTES, built at setup, or with * at most AMBASSADOR_MAX_SERVICES names the catalog
// knows. A name outside it is answered 404 before anything is created. Safe for concurrent use.
type router struct {
	client  func(service string) *http.Client
	all     bool
	suffix  string
	max     int
	catalog catalog
	named   map[string]*httputil.ReverseProxy // AMBASSADOR_ROUTES by name; read-only after newRouter
	errLog  *log.Logger
	log     *slog.Logger

	mu      sync.Mutex
	dynamic map[string]*httputil.ReverseProxy // with *: the services met so far, at most max
	full    bool                              // the cap was logged
}

// newRouter builds the proxies of the listed services at once, so that a listed service that
// cannot work (no DISCOVERY_STATIC_<NAME>, a bad CLIENT_<NAME>_* variable) fails the start.
func newRouter(client func(string) *http.Client, cfg Config, cat catalog, logger *slog.Logger) *router {
	r := &router{
		client: client, all: cfg.all(), suffix: cfg.HostSuffix, max: cfg.MaxServices, catalog: cat,
		named: map[string]*httputil.ReverseProxy{}, dynamic: map[string]*httputil.ReverseProxy{},
		errLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn), log: logger,
	}
	for _, name := range cfg.Routes {
		if name != wildcard {
			r.named[name] = r.newProxy(name)
		}
	}
	return r
}

// ServeHTTP implements http.Handler.
func (r *router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	service, _ := r.target(req)
	if service == "" {
		problem.Write(w, http.StatusNotFound, "", "no service named: call /<service>/<path> or send Host: <service>")
		return
	}
	p, status, err := r.proxy(req.Context(), service)
	if err != nil {
		problem.Write(w, status, "", err.Error())
		return
	}
	p.ServeHTTP(w, req)
}

// target returns the service req is for and whether its Host named it (else its first path
// segment did, and is stripped before forwarding). Host routing: Host is <service>.<suffix>
// (AMBASSADOR_HOST_SUFFIX), or exactly a service listed by name in AMBASSADOR_ROUTES.
func (r *router) target(req *http.Request) (service string, byHost bool) {
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if r.suffix != "" {
		if s, ok := strings.CutSuffix(host, "."+r.suffix); ok && serviceName.MatchString(s) {
			return s, true
		}
	}
	if _, ok := r.named[host]; ok {
		return host, true
	}
	seg, _, _ := strings.Cut(strings.TrimPrefix(req.URL.Path, "/"), "/")
	return seg, false
}

// proxy returns the service's proxy, creating it when AMBASSADOR_ROUTES=* allows the service, the
// catalog knows it, and the cap leaves room. Its errors carry the status to answer.
func (r *router) proxy(ctx context.Context, service string) (*httputil.ReverseProxy, int, error) {
	if p, ok := r.named[service]; ok {
		return p, 0, nil
	}
	if !r.all {
		allowed := cmp.Or(strings.Join(slices.Sorted(maps.Keys(r.named)), ", "), "none")
		return nil, http.StatusNotFound, fmt.Errorf("no route to %q: AMBASSADOR_ROUTES allows %s", service, allowed)
	}
	if !serviceName.MatchString(service) {
		return nil, http.StatusNotFound, fmt.Errorf("no route to %q: not a service name", service)
	}
	r.mu.Lock()
	p, ok := r.dynamic[service]
	r.mu.Unlock()
	if ok {
		return p, 0, nil
	}
	known, err := r.catalog.Has(ctx, service)
	if err != nil {
		return nil, http.StatusServiceUnavailable, fmt.Errorf("is %q a service? the catalog did not answer: %w", service, err)
	}
	if !known {
		return nil, http.StatusNotFound, fmt.Errorf("no route to %q: discovery knows no such service", service)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.dynamic[service]; ok {
		return p, 0, nil
	}
	if len(r.dynamic) >= r.max {
		if !r.full {
			r.full = true
			r.log.Warn("AMBASSADOR_MAX_SERVICES reached: new services are refused", slog.Int("max", r.max), slog.String("refused", service))
		}
		return nil, http.StatusServiceUnavailable, fmt.Errorf("no route to %q: the ambassador already serves AMBASSADOR_MAX_SERVICES (%d) services", service, r.max)
	}
	p = r.newProxy(service)
	r.dynamic[service] = p
	return p, 0, nil
}

// newProxy forwards to service through its client. The outgoing request is the incoming one with
// the service as URL host (the client's balancer picks the instance), the routing prefix stripped,
// the Host header the service name (as an in-process call through svc.Client sends), hop-by-hop
// headers removed, and X-Forwarded-For (appended to), -Host, -Proto and, for path routing,
// X-Forwarded-Prefix set. Streamed responses (no Content-Length, text/event-stream) are flushed
// as they arrive. Request bodies stream too; the client buffers those up to
// CLIENT_<NAME>_RETRY_BODY_MAX so that idempotent requests can be retried or hedged.
func (r *router) newProxy(service string) *httputil.ReverseProxy {
	client := r.client(service)
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			_, byHost := r.target(pr.In)
			out := pr.Out
			out.URL.Scheme, out.URL.Host, out.Host = "http", service, ""
			if !byHost {
				prefix := "/" + service
				out.URL.Path = cmp.Or(strings.TrimPrefix(out.URL.Path, prefix), "/")
				if out.URL.RawPath != "" {
					out.URL.RawPath = cmp.Or(strings.TrimPrefix(out.URL.RawPath, prefix), "/")
				}
				out.Header.Set("X-Forwarded-Prefix", prefix)
			}
			if xff := pr.In.Header["X-Forwarded-For"]; len(xff) > 0 {
				out.Header["X-Forwarded-For"] = xff // SetXForwarded appends the caller's address
			}
			pr.SetXForwarded()
		},
		Transport:    client.Transport,
		ErrorHandler: r.fail(service),
		ErrorLog:     r.errLog,
		BufferPool:   buffers, // else each response body is copied through a new 32 KiB buffer
	}
}

// buffers are the copy buffers of every proxy.
var buffers httputil.BufferPool = &bufferPool{sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *bufferPool) Put(p []byte) { b.p.Put(&p) }

// fail answers a call that got no response, as problem+json: 503 when nothing could be sent (no
// instance, breakers open, bulkhead full; Retry-After when a breaker says when it lets a probe
// through), 504 on a timeout, 499 when the caller went away, else 502.
func (r *router) fail(service string) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, req *http.Request, err error) {
		status := errorStatus(req.Context(), err)
		var re *resilience.RejectedError
		if errors.As(err, &re) && re.RetryIn > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(re.RetryIn.Seconds()))))
		}
		problem.Write(w, status, "", service+": "+err.Error())
	}
}

func errorStatus(ctx context.Context, err error) int {
	switch {
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled):
		return StatusClientClosed
	case errors.Is(err, lb.ErrNoInstances), errors.Is(err, resilience.ErrBreakerOpen), errors.Is(err, resilience.ErrBulkheadFull):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}
