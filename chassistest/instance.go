package chassistest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap/zaptest/observer"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/telemetry"
	"github.com/cloudchassis/kit/telemetry/semconv"
	"github.com/cloudchassis/kit/telemetry/telemetrytest"
)

// Start runs a service for the test: chassis.New(name) with the fakes wired (configuration from
// BaseEnv and WithEnv, in-memory telemetry, an in-memory registry, no signal handling), then
// setup(svc) — the same function main gives chassis.Main — then Run on 127.0.0.1 with ephemeral
// ports. It returns once the service is ready and fails the test if it does not get ready within
// DefaultReadyTimeout. The service stops when the test ends (or at Instance.Stop), and the test fails
// if Run returns an error or goroutines leak.
//
// Start is a one-service Cluster; use NewCluster for services that call each other.
func Start(tb testing.TB, name string, setup func(*chassis.Service) error, opts ...Option) *Instance {
	tb.Helper()
	return NewCluster(tb).Start(name, setup, opts...)
}

// Instance is one service started by Start or Cluster.Start, with what it recorded.
type Instance struct {
	name    string
	c       *Cluster
	svc     *chassis.Service
	rec     *telemetrytest.Recorder
	logs    *logBuffer
	memory  http.RoundTripper // the service's handler, in memory
	outward *http.Transport   // the service's calls to others over loopback
	client  *http.Client      // the test's client to the service
	inMem   bool
	cancel  context.CancelFunc
	done    chan error

	mu       sync.Mutex
	stopped  bool
	stopOnce sync.Once
	addr     string
}

func (c *Cluster) start(name string, setup func(*chassis.Service) error, o options) *Instance {
	tb := c.tb
	tb.Helper()
	in := &Instance{
		name:  name,
		c:     c,
		rec:   telemetrytest.NewRecorder(),
		logs:  newLogBuffer(o.logOutput),
		inMem: o.inMemory,
		done:  make(chan error, 1),
	}
	env := BaseEnv()
	maps.Copy(env, o.env)
	copts := []chassis.Option{
		chassis.WithEnv(config.MapLookup(env)),
		chassis.WithoutSignals(),
		chassis.WithLogOutput(in.logs),
		chassis.WithTelemetryOptions(append(in.rec.Options(), telemetry.WithoutRuntimeMetrics())...),
		chassis.WithResolver(in.resolve),
		chassis.WithRegistrar(in.registrar),
		// Every client of the service, whenever it is created, goes through the cluster's links
		// (faults, partitions); the service's own client options come after these.
		chassis.WithClientDefaults(func(dep string) []chassis.ClientOption {
			return []chassis.ClientOption{chassis.WithBalancer(lb.WithBaseTransport(
				&linkTransport{c: c, from: in.name, to: dep, next: in.base()}))}
		}),
	}
	// The service's own calls: a transport it owns, closed when it stops, so no idle connection
	// outlives it.
	in.outward = http.DefaultTransport.(*http.Transport).Clone()
	svc, err := chassis.New(name, append(copts, o.chassis...)...)
	if err != nil {
		tb.Fatalf("chassistest: start %s: %v", name, err)
	}
	in.svc = svc
	in.name = svc.Name() // SERVICE_NAME may rename it
	in.memory = HandlerTransport(svc.Handler())

	if setup != nil {
		if err := setup(svc); err != nil {
			_ = svc.Telemetry().Shutdown(context.Background())
			tb.Fatalf("chassistest: %s: setup: %v", name, err)
		}
	}

	c.add(in)
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	go func() { in.done <- svc.Run(ctx) }()
	tb.Cleanup(func() { in.stop(tb) })

	timer := time.NewTimer(o.readyTimeout)
	defer timer.Stop()
	select {
	case <-svc.Ready():
	case err := <-in.done:
		in.done <- err // for stop
		tb.Fatalf("chassistest: %s stopped before it was ready: %v\n%s", name, err, in.logs.String())
	case <-timer.C:
		tb.Fatalf("chassistest: %s not ready after %v\n%s", name, o.readyTimeout, in.logs.String())
	}
	if in.inMem {
		in.client = &http.Client{Transport: in.memory}
	} else {
		in.client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	return in
}

// resolve is the service's chassis.Resolver: the cluster registry's watcher.
func (in *Instance) resolve(service string) (discovery.Watcher, func(), error) {
	return in.c.registry.Watcher(service), nil, nil
}

// registrar registers the service in the cluster registry under its bound public address.
func (in *Instance) registrar(svc *chassis.Service) (discovery.Registrar, error) {
	host, portStr, err := net.SplitHostPort(svc.Addr())
	if err != nil {
		return nil, fmt.Errorf("chassistest: public address %q: %w", svc.Addr(), err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("chassistest: public port %q: %w", portStr, err)
	}
	in.mu.Lock()
	in.addr = svc.Addr()
	in.mu.Unlock()
	in.c.setAddr(svc.Addr(), in)
	inst := discovery.Instance{ID: in.name + "-" + portStr, Address: host, Port: port}
	if g := svc.GRPCAddr(); g != "" {
		// As chassis registers in Consul: the gRPC port as metadata of the same instance, which
		// GRPCClient dials (loopback only: gRPC does not go through InMemory's routing).
		_, gp, _ := net.SplitHostPort(g)
		inst.Meta = map[string]string{chassis.MetaGRPCPort: gp}
	}
	return in.c.registry.Registrar(in.name, inst), nil
}

// base is the transport under the links: memory in InMemory mode, else the instance's own sockets.
func (in *Instance) base() http.RoundTripper {
	if in.inMem {
		return memoryRoute{in.c}
	}
	return in.outward
}

func (in *Instance) isStopped() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stopped
}

// Stop stops the service now, as SIGTERM would: readiness turns 503, it deregisters, drains and
// stops. It fails the test if Run returns an error. Stop is idempotent; the test's cleanup calls it.
func (in *Instance) Stop(tb testing.TB) {
	tb.Helper()
	in.stop(tb)
}

// stopWait bounds the wait for Run to return: the shutdown has SHUTDOWN_TIMEOUT, this is a backstop.
const stopWait = 60 * time.Second

func (in *Instance) stop(tb testing.TB) {
	tb.Helper()
	in.stopOnce.Do(func() {
		in.cancel()
		timer := time.NewTimer(stopWait)
		defer timer.Stop()
		select {
		case err := <-in.done:
			if err != nil {
				tb.Errorf("chassistest: %s stopped with error: %v", in.name, err)
			}
		case <-timer.C:
			tb.Errorf("chassistest: %s did not stop within %v", in.name, stopWait)
		}
		in.mu.Lock()
		in.stopped = true
		addr := in.addr
		in.mu.Unlock()
		if addr != "" {
			in.c.setAddr(addr, nil)
		}
		in.outward.CloseIdleConnections()
		if in.client != nil {
			in.client.CloseIdleConnections()
		}
		if tb.Failed() {
			tb.Logf("chassistest: logs of %s:\n%s", in.name, in.logs.String())
		}
	})
}

// Name returns the service name.
func (in *Instance) Name() string { return in.name }

// Service returns the running service.
func (in *Instance) Service() *chassis.Service { return in.svc }

// Addr returns the public server's address (127.0.0.1:port).
func (in *Instance) Addr() string { return in.svc.Addr() }

// AdminAddr returns the admin server's address (health, metrics, pprof).
func (in *Instance) AdminAddr() string { return in.svc.AdminAddr() }

// URL returns the URL of path on the service, for Client: http://127.0.0.1:port/path, or
// http://<name>/path for an InMemory service (whose client ignores the host).
func (in *Instance) URL(path string) string {
	if in.inMem {
		return "http://" + in.name + path
	}
	return "http://" + in.Addr() + path
}

// AdminURL returns the URL of path on the admin server (always over loopback).
func (in *Instance) AdminURL(path string) string { return "http://" + in.AdminAddr() + path }

// Client returns a client for the service's public routes: over loopback, or in memory for an
// InMemory service. It is owned by the instance, which closes its idle connections when it stops.
func (in *Instance) Client() *http.Client { return in.client }

// Get sends GET path to the service through Client and returns the response with its body read
// (and closed) into a string. It fails the test at once on a transport error.
func (in *Instance) Get(tb testing.TB, path string) (*http.Response, string) {
	tb.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, in.URL(path), nil)
	if err != nil {
		tb.Fatalf("chassistest: %v", err)
	}
	return in.Do(tb, req)
}

// Do sends req through Client and returns the response with its body read (and closed) into a
// string. A request without a host gets the service's. It fails the test at once on a transport
// error.
func (in *Instance) Do(tb testing.TB, req *http.Request) (*http.Response, string) {
	tb.Helper()
	if req.URL.Host == "" {
		u := *req.URL
		u.Scheme = "http"
		if in.inMem {
			u.Host = in.name
		} else {
			u.Host = in.Addr()
		}
		req.URL = &u
	}
	res, err := in.client.Do(req)
	if err != nil {
		tb.Fatalf("chassistest: %s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatalf("chassistest: %s %s: reading body: %v", req.Method, req.URL, err)
	}
	res.Body = io.NopCloser(bytes.NewReader(b))
	return res, string(b)
}

// Recorder returns the in-memory recorder of the service's spans, metrics and logs.
func (in *Instance) Recorder() *telemetrytest.Recorder { return in.rec }

// Spans returns the spans the service ended so far, oldest first.
func (in *Instance) Spans() []sdktrace.ReadOnlySpan { return in.rec.Spans.Ended() }

// AssertSpan fails the test unless exactly one ended span is named name and carries every attribute
// in want; it returns the span, or nil after a failure. Server spans are named "METHOD /route".
func (in *Instance) AssertSpan(tb testing.TB, name string, want ...attribute.KeyValue) sdktrace.ReadOnlySpan {
	tb.Helper()
	return in.rec.AssertSpan(tb, name, want...)
}

// MetricValue returns the sum of the data points of a counter, up-down counter or gauge whose
// attributes include want (0 if it has none).
func (in *Instance) MetricValue(tb testing.TB, name string, want ...attribute.KeyValue) float64 {
	tb.Helper()
	return in.rec.CounterValue(tb, name, want...)
}

// HistogramCount returns how many measurements a histogram has over the data points whose
// attributes include want.
func (in *Instance) HistogramCount(tb testing.TB, name string, want ...attribute.KeyValue) uint64 {
	tb.Helper()
	return in.rec.HistogramCount(tb, name, want...)
}

// ServerRequests returns how many requests the service answered on route (the pattern's path, as in
// "/items/{id}"), counted by http.server.request.duration, narrowed by want (for example
// attribute.Int("http.response.status_code", 504)).
func (in *Instance) ServerRequests(tb testing.TB, route string, want ...attribute.KeyValue) uint64 {
	tb.Helper()
	attrs := append([]attribute.KeyValue{attribute.String(semconv.AttrHTTPRoute, route)}, want...)
	return in.rec.HistogramCount(tb, semconv.HTTPServerRequestDuration, attrs...)
}

// Logs returns the service's log entries, all levels, as zap's observer recorded them:
// Logs().FilterMessage("ready").Len(), Logs().FilterField(zap.String("route", "/x")).All(), ...
func (in *Instance) Logs() *observer.ObservedLogs { return in.rec.Logs }

// logBuffer keeps the service's log lines for the failure report, up to a bound, dropping the
// oldest half when full; it copies them to an optional writer.
type logBuffer struct {
	mu      sync.Mutex
	buf     []byte
	dropped bool
	copy    io.Writer
}

const logBufferLimit = 1 << 20

func newLogBuffer(w io.Writer) *logBuffer { return &logBuffer{copy: w} }

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf)+len(p) > logBufferLimit {
		cut := len(b.buf) / 2
		if i := bytes.IndexByte(b.buf[cut:], '\n'); i >= 0 {
			cut += i + 1
		}
		b.buf = append(b.buf[:0], b.buf[cut:]...)
		b.dropped = true
	}
	b.buf = append(b.buf, p...)
	if b.copy != nil {
		_, _ = b.copy.Write(p)
	}
	return len(p), nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped {
		return "(older lines dropped)\n" + string(b.buf)
	}
	return string(b.buf)
}
