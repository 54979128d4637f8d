package lb

import (
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/internal/eofbody"
)

// Transport is an http.RoundTripper that sends requests for http://<service>/... (or https) to an
// instance of the service chosen by a Balancer. Each RoundTrip picks again, so a retry in an outer
// layer goes to a fresh pick.
//
// The URL's host (its port is ignored) must be the service name; the request goes out with the URL
// host replaced by the instance's address:port. The Host header stays what the caller set: the
// logical service name for requests made with http.NewRequest. Instances that need their own address
// as Host can have it with a WithInstanceTransport wrapper that clears req.Host on a copy.
//
// Latency is measured until the response headers arrive and fed to the balancer with the outcome
// (see WithClassifier); the call stays in flight until the response body is closed or read to EOF,
// so close every body, as net/http requires anyway. Before the first snapshot RoundTrip waits for it,
// bounded by the request's context; with no instance to use it fails with a *NoInstancesError.
//
// A Transport is safe for concurrent use.
type Transport struct{ b *Balancer }

var _ discovery.TriedRoundTripper = (*Transport)(nil)

// NewTransport returns a Transport over b.
func NewTransport(b *Balancer) *Transport { return &Transport{b: b} }

// RoundTrip implements http.RoundTripper: one pick, with nothing to avoid.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.RoundTripTried(req, nil)
}

// RoundTripTried implements discovery.TriedRoundTripper: the pick avoids the instances in tried (a
// retry or a hedge of the same call) and is recorded there. nil tried is RoundTrip.
func (t *Transport) RoundTripTried(req *http.Request, tried *discovery.Tried) (*http.Response, error) {
	b := t.b
	if h := req.URL.Hostname(); h != b.service {
		closeBody(req)
		return nil, fmt.Errorf("lb: request host %q is not service %q", h, b.service)
	}
	ctx := req.Context()
	table := b.table.Load()
	e, err := b.pick(ctx, tried)
	if err != nil {
		// Before the first snapshot, wait for it, bounded by ctx. Pick again if the instance set
		// changed since the failed pick: the first snapshot can land between the two.
		select {
		case <-b.ready:
		case <-ctx.Done():
			err = fmt.Errorf("%w: %w", err, ctx.Err())
		}
		if ctx.Err() == nil && b.table.Load() != table {
			e, err = b.pick(ctx, tried)
		}
		if err != nil {
			b.m.noInstances(ctx)
			closeBody(req)
			return nil, err
		}
	}

	if tried != nil {
		tried.Add(e.key)
	}
	// RoundTrippers must not modify the request: a shallow copy with a new URL. The copy, its URL and
	// the body wrapper share one allocation.
	c := &call{req: *req, url: *req.URL}
	c.url.Host = e.hostPort
	out := &c.req
	out.URL = &c.url
	if out.Host == "" {
		out.Host = req.URL.Host
	}
	start := b.nanos()
	resp, err := e.rt.RoundTrip(out)
	end := b.nanos()
	if reason := e.finish(end, end-start, b.classify(req, resp, err)); reason != "" {
		ejectionEvent(ctx, reason, e.key) // on the span of the call whose outcome ejected it
	}
	if err != nil {
		e.Release()
		return nil, fmt.Errorf("lb: %s instance %s at %s: %w", b.service, e.key, e.hostPort, err)
	}
	resp.Request = req
	switch rc := resp.Body.(type) {
	case nil:
		e.Release()
	case io.ReadWriteCloser: // 101 Switching Protocols: keep the body writable
		resp.Body = &rwBody{Body: eofbody.Body{ReadCloser: rc, R: e}, w: rc}
	default:
		if rc == http.NoBody {
			e.Release()
			break
		}
		c.body.ReadCloser, c.body.R = rc, e // the call stays in flight until EOF or Close
		resp.Body = &c.body
	}
	return resp, nil
}

// call is the per-call state of a Transport, allocated once.
type call struct {
	req  http.Request
	url  url.URL
	body eofbody.Body
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

type rwBody struct {
	eofbody.Body
	w io.Writer
}

func (b *rwBody) Write(p []byte) (int, error) { return b.w.Write(p) }
