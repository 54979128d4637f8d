package grpcclient

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/internal/grpcwire"
	"github.com/cloudchassis/kit/resilience"
)

// MetaPort is the instance metadata key (Consul service meta) that holds an instance's gRPC port,
// when it serves gRPC on another port than the one it registered.
const MetaPort = grpcwire.MetaPort

// Client is the client side of one gRPC dependency: a *grpc.ClientConn to the instances of a named
// service, found through a discovery.Watcher, balanced and protected as Chassis' HTTP clients are.
// New builds it, Start follows discovery, Close ends it. Its methods are safe for concurrent use.
type Client struct {
	service string
	dep     *resilience.Dependency
	bal     *lb.Balancer
	rt      http.RoundTripper // dep.Wrap(lb.NewTransport(bal)): the policies of a unary call
	conn    *grpc.ClientConn
	w       discovery.Watcher // the resolver's: discovery with gRPC ports
	feed    *feed             // the lb.Balancer's: the instances the gRPC balancer connects to
	tel     *instruments
	opts    options
	classes [17]discovery.Class // of each code, for the outcomes of streams

	idem       map[string]bool
	idemProto  sync.Map // full method -> bool, from the proto registry
	perAttempt bool     // hedging is on: each attempt gets its own reply message

	conns   atomic.Pointer[connTable] // published by the gRPC balancer
	changed atomic.Pointer[chan struct{}]

	mu      sync.Mutex
	started bool
	closed  bool
}

// New returns the client of service over w. It makes the *grpc.ClientConn (Conn) but connects
// nothing until Start. Instances are dialled at MetaPort from their metadata, else their port
// (WithPort overrides both), without TLS unless WithDialOptions gives credentials.
func New(service string, w discovery.Watcher, opts ...Option) (*Client, error) {
	o := options{cfg: resilience.DefaultConfig()}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if service == "" || strings.ContainsAny(service, "/:") {
		return nil, fmt.Errorf("grpcclient: bad service name %q", service)
	}
	if w == nil {
		return nil, errors.New("grpcclient: nil watcher")
	}
	ropts := []resilience.Option{}
	if o.meter != nil {
		ropts = append(ropts, resilience.WithMeterProvider(o.meter))
	}
	if o.tracer != nil {
		ropts = append(ropts, resilience.WithTracerProvider(o.tracer))
	}
	ropts = append(ropts, o.ropts...)
	if o.classifier != nil {
		ropts = append(ropts, resilience.WithClassifier(o.classifier))
	}
	dep, err := resilience.NewDependency(service, o.cfg, ropts...)
	if err != nil {
		return nil, fmt.Errorf("grpcclient: %w", err)
	}
	c := &Client{service: service, dep: dep, w: portWatcher{w: w, port: o.port}, opts: o,
		idem: map[string]bool{}, perAttempt: o.cfg.HedgeDelay > 0 || o.cfg.HedgePercentile > 0}
	for _, m := range o.idempotent {
		c.idem[m] = true
	}
	c.classes = classTable(dep.Classify)
	c.conns.Store(&connTable{})
	ch := make(chan struct{})
	c.changed.Store(&ch)
	c.feed = newFeed(service, c.notify)
	if c.tel, err = newInstruments(service, o.meter, o.tracer, o.propagator); err != nil {
		return nil, fmt.Errorf("grpcclient: metrics: %w", err)
	}
	bopts := append([]lb.Option{}, o.lb...)
	if o.meter != nil {
		bopts = append([]lb.Option{lb.WithMeterProvider(o.meter)}, bopts...)
	}
	bopts = append(bopts,
		lb.WithClassifier(dep.Classify),
		lb.WithInstanceTransport(func(inst discovery.Instance, _ http.RoundTripper) http.RoundTripper {
			return dep.Instance(instanceKey(inst), &attemptTransport{c: c, id: instanceKey(inst)})
		}),
		lb.WithAvailability(c.usable))
	if c.bal, err = lb.New(service, c.feed, bopts...); err != nil {
		return nil, fmt.Errorf("grpcclient: %w", err)
	}
	c.rt = dep.Wrap(lb.NewTransport(c.bal))

	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	dial = append(dial, o.dial...)
	dial = append(dial,
		grpc.WithResolvers(&resolverBuilder{c: c}),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"`+BalancerName+`":{}}]}`),
		grpc.WithIdleTimeout(0), // the resolver and the balancer follow discovery from Start to Close
		grpc.WithChainUnaryInterceptor(append([]grpc.UnaryClientInterceptor{c.unary}, o.unary...)...),
		grpc.WithChainStreamInterceptor(append([]grpc.StreamClientInterceptor{c.stream}, o.stream...)...),
	)
	if c.conn, err = grpc.NewClient(scheme+":///"+service, dial...); err != nil {
		_ = c.bal.Close()
		return nil, fmt.Errorf("grpcclient: %w", err)
	}
	return c, nil
}

// Conn returns the connection to the dependency, for generated clients
// (pricingpb.NewPricingClient(c.Conn())). Calls made before Start wait for it within their deadline.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Service returns the name of the service the client calls.
func (c *Client) Service() string { return c.service }

// Balancer returns the client's balancer, for its per-instance state (tests, debugging).
func (c *Client) Balancer() *lb.Balancer { return c.bal }

// Start follows discovery: the balancer's watch and the connection's resolver start, and the
// connection dials the instances. It returns ErrClosed after Close.
func (c *Client) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return ErrClosed
	case c.started:
		return nil
	}
	if err := c.bal.Start(); err != nil {
		return fmt.Errorf("grpcclient: %w", err)
	}
	c.started = true
	c.conn.Connect()
	return nil
}

// Close closes the connection (calls in flight fail with CANCELLED) and stops following
// discovery. It is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	err := c.conn.Close()
	return errors.Join(err, c.bal.Close())
}

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("grpcclient: client closed")

func instanceKey(inst discovery.Instance) string {
	if inst.ID != "" {
		return inst.ID
	}
	return inst.HostPort()
}

// idempotent reports whether method may be sent more than once: declared (WithIdempotent), or
// its proto definition's idempotency_level is IDEMPOTENT or NO_SIDE_EFFECTS.
func (c *Client) idempotent(method string) bool {
	if c.idem[method] {
		return true
	}
	if v, ok := c.idemProto.Load(method); ok {
		return v.(bool)
	}
	v := protoIdempotent(method)
	c.idemProto.Store(method, v)
	return v
}

func protoIdempotent(method string) bool {
	name := strings.ReplaceAll(strings.TrimPrefix(method, "/"), "/", ".")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return false
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return false
	}
	mo, ok := md.Options().(*descriptorpb.MethodOptions)
	if !ok {
		return false
	}
	l := mo.GetIdempotencyLevel()
	return l == descriptorpb.MethodOptions_IDEMPOTENT || l == descriptorpb.MethodOptions_NO_SIDE_EFFECTS
}

// call is one unary call on its way through the policies, found by the attempts in their context.
type call struct {
	method  string
	req     any
	reply   any
	cc      *grpc.ClientConn
	invoker grpc.UnaryInvoker
	opts    []grpc.CallOption
	fresh   func() any // a new reply message for each attempt; nil: attempts share reply
	header  bool       // the caller asked for the header or the trailer: opts lacks those options

	mu      sync.Mutex
	results []result
}

// result is what an attempt answered, found again by its response.
type result struct {
	resp    *http.Response
	reply   any
	err     error
	header  metadata.MD
	trailer metadata.MD
}

type callKey struct{}

func (k *call) add(r result) {
	k.mu.Lock()
	k.results = append(k.results, r)
	k.mu.Unlock()
}

func (k *call) find(resp *http.Response) (result, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, r := range k.results {
		if r.resp == resp {
			return r, true
		}
	}
	return result{}, false
}

// unary runs a call through the client's policies; every attempt then continues down the chain of
// interceptors to the connection, directed at the instance the balancer chose.
func (c *Client) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	ctx, end := c.tel.start(ctx, method, c.opts.requestID)
	err := c.invoke(ctx, method, req, reply, cc, invoker, opts)
	end(ctx, err)
	return err
}

func (c *Client) invoke(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts []grpc.CallOption) error {
	k := &call{method: method, req: req, reply: reply, cc: cc, invoker: invoker, opts: opts}
	for i, o := range opts {
		switch o.(type) {
		case grpc.HeaderCallOption, grpc.TrailerCallOption:
			// Attempts get their own, and the winner's are copied (hedges run concurrently).
			k.opts = slices.DeleteFunc(slices.Clone(opts[i:]), isMetadataOption)
			k.opts = append(slices.Clone(opts[:i]), k.opts...)
			k.header = true
		}
		if k.header {
			break
		}
	}
	idem := c.idempotent(method)
	if c.perAttempt {
		// Hedged attempts run at once: each decodes into its own message, the winner's is copied.
		if m, ok := reply.(proto.Message); ok {
			k.fresh = func() any { return m.ProtoReflect().New().Interface() }
		} else {
			idem = false // not a proto message: it cannot be copied, so it is never hedged
		}
	}
	if idem {
		ctx = resilience.MarkRetryable(ctx)
	}
	// The overall timeout (CLIENT_<NAME>_TIMEOUT) starts now, so that waiting for a connection
	// counts against it as the attempts do; the policies below apply it again, which changes
	// nothing.
	if d := c.opts.cfg.Timeout; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	if err := c.waitConnected(ctx); err != nil {
		return toStatus(err)
	}
	ctx = context.WithValue(ctx, callKey{}, k)
	hreq := &http.Request{Method: http.MethodPost, URL: c.url(method), Header: http.Header{}, Host: c.service,
		Proto: "HTTP/2.0", ProtoMajor: 2}
	hreq = hreq.WithContext(ctx)
	var resp *http.Response
	var err error
	for {
		t := c.conns.Load()
		resp, err = c.rt.RoundTrip(hreq)
		if err == nil || !errors.Is(err, lb.ErrNoInstances) || (t.connecting == 0 && c.feed.current()) || ctx.Err() != nil {
			break
		}
		// No instance to pick while others are still connecting, or before the balancer applied
		// the latest instance set: wait for a change, as gRPC waits for a picker, instead of
		// failing now.
		if c.awaitChange(ctx, t) != nil {
			break
		}
	}
	if err != nil {
		return toStatus(err)
	}
	r, ok := k.find(resp)
	if !ok { // a response no attempt made: a Fallback or a custom layer answered
		return toStatus(fmt.Errorf("grpcclient: response %d without a gRPC call", resp.StatusCode))
	}
	if r.reply != nil && r.err == nil && r.reply != reply {
		proto.Reset(reply.(proto.Message))
		proto.Merge(reply.(proto.Message), r.reply.(proto.Message))
	}
	if k.header {
		copyMetadata(opts, r.header, r.trailer)
	}
	return r.err
}

// url is the address the policies see for a call: the service as host (the balancer checks it)
// and the full method as path.
func (c *Client) url(method string) *url.URL {
	return &url.URL{Scheme: "http", Host: c.service, Path: method}
}

// waitConnected waits, within ctx, until some instance is connected and the balancer knows it, as
// gRPC waits for a picker: right after Start, and while every instance is connecting. It returns
// at once when the balancer has instances connected, or when none is even being dialled (the pick
// then fails fast).
func (c *Client) waitConnected(ctx context.Context) error {
	for {
		t := c.conns.Load()
		if (t.ready > 0 || (t.resolved && t.connecting == 0)) && c.feed.current() {
			return nil
		}
		if err := c.awaitChange(ctx, t); err != nil {
			return fmt.Errorf("grpcclient: %s: no instance connected: %w", c.service, err)
		}
	}
}

// awaitChange waits until the connection table is no longer t, or ctx ends.
func (c *Client) awaitChange(ctx context.Context, t *connTable) error {
	ch := *c.changed.Load()
	if c.conns.Load() != t {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// publish installs the gRPC balancer's table of connections and wakes the calls waiting for one.
func (c *Client) publish(t *connTable) {
	c.conns.Store(t)
	c.notify()
}

// notify wakes the calls waiting for a change of the connections or of the balancer's instances.
func (c *Client) notify() {
	ch := make(chan struct{})
	old := c.changed.Swap(&ch)
	close(*old)
}

// usable is the balancer's availability test (see subConn.usable).
func (c *Client) usable(id string) bool {
	sc := c.conns.Load().byID[id]
	return sc != nil && sc.usable()
}

// attemptTransport is the bottom of an instance's chain (below its breaker, attempt timeout and
// bulkhead): it makes the gRPC attempt, directed at its instance, and shows the result to the
// policies as a response (see HTTPStatus).
type attemptTransport struct {
	c  *Client
	id string
}

// target is what an attempt tells the gRPC picker: the instance, and whether it was found
// connected.
type target struct {
	id     string
	unsent bool
}

// firstConnectionShare is the share of an attempt's remaining time it may spend waiting for its
// instance's first connection: the rest is left for another instance, since nothing was sent.
const firstConnectionShare = 0.5

// awaitFirstConnection waits while the instance id's first connection is being made, for at most
// firstConnectionShare of the time ctx leaves. It reports false when the connection is still not
// READY then, or failed: the attempt was not sent and may go elsewhere for any method.
func (c *Client) awaitFirstConnection(ctx context.Context, id string) bool {
	var expire <-chan time.Time
	for {
		t := c.conns.Load()
		s := t.byID[id]
		switch {
		case s == nil || s.ready():
			return true // the picker decides
		case !s.usable():
			return false
		}
		if expire == nil {
			wait := time.Duration(math.MaxInt64)
			if dl, ok := ctx.Deadline(); ok {
				wait = time.Duration(float64(time.Until(dl)) * firstConnectionShare)
			}
			timer := time.NewTimer(wait)
			defer timer.Stop()
			expire = timer.C
		}
		ch := *c.changed.Load()
		if c.conns.Load() != t {
			continue
		}
		select {
		case <-ch:
		case <-expire:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

type targetKey struct{}

func (t *attemptTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	k, _ := ctx.Value(callKey{}).(*call)
	if k == nil {
		return nil, errors.New("grpcclient: request without a gRPC call")
	}
	if !t.c.awaitFirstConnection(ctx, t.id) {
		return nil, &unsentError{id: t.id, err: fmt.Errorf("first connection not ready: %w", context.DeadlineExceeded)}
	}
	tg := &target{id: t.id}
	reply := k.reply
	if k.fresh != nil {
		reply = k.fresh()
	}
	var header, trailer metadata.MD
	opts := append(k.opts[:len(k.opts):len(k.opts)], grpc.Trailer(&trailer), // for the pushback
		grpc.WaitForReady(false)) // the picker fails a directed attempt at once: the policies pick again
	if k.header {
		opts = append(opts, grpc.Header(&header))
	}
	err := k.invoker(context.WithValue(ctx, targetKey{}, tg), k.method, k.req, reply, k.cc, opts...)
	var ns *notSentError
	if tg.unsent || errors.As(err, &ns) {
		return nil, &unsentError{id: t.id, err: err}
	}
	if err != nil && ctx.Err() != nil {
		// Our attempt timeout or the caller's deadline: the layers above tell which.
		return nil, fmt.Errorf("grpcclient: %w: %w", ctx.Err(), err)
	}
	resp := response(status.Convert(err), trailer)
	resp.Request = req
	k.add(result{resp: resp, reply: reply, err: err, header: header, trailer: trailer})
	return resp, nil
}

// unsentError is an attempt the picker refused because its instance was not connected: nothing was
// sent, so it may go elsewhere whatever the method.
type unsentError struct {
	id  string
	err error
}

func (e *unsentError) Error() string {
	return "grpcclient: instance " + e.id + " not connected: " + e.err.Error()
}
func (e *unsentError) Unwrap() error { return e.err }
func (e *unsentError) Class() discovery.Class {
	return discovery.Class{Retryable: true, Failure: true, Unsent: true}
}

// NotSent marks err, returned by an interceptor of WithInterceptors for an attempt it did not pass
// on, as never sent: the policies retry it on another instance whatever the method, as they do
// when the instance is not connected. chassistest's GRPCUnreachable fault uses it.
func NotSent(err error) error { return &notSentError{err: err} }

type notSentError struct{ err error }

func (e *notSentError) Error() string              { return e.err.Error() }
func (e *notSentError) Unwrap() error              { return e.err }
func (e *notSentError) GRPCStatus() *status.Status { return status.Convert(e.err) }

func isMetadataOption(o grpc.CallOption) bool {
	switch o.(type) {
	case grpc.HeaderCallOption, grpc.TrailerCallOption:
		return true
	}
	return false
}

// copyMetadata fills the caller's grpc.Header and grpc.Trailer options with the winning attempt's.
func copyMetadata(opts []grpc.CallOption, header, trailer metadata.MD) {
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = trailer
		}
	}
}

// Instance returns the id of the instance an attempt is directed at, for interceptors given with
// WithInterceptors (per-instance fault injection, logging).
func Instance(ctx context.Context) (string, bool) {
	t, ok := ctx.Value(targetKey{}).(*target)
	if !ok {
		return "", false
	}
	return t.id, true
}
