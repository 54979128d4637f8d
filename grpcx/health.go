package grpcx

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// DefaultWatchInterval is how often a Watch stream re-evaluates readiness between the changes
// Health.Update announces: it bounds how long a failing readiness check takes to show.
const DefaultWatchInterval = time.Second

// Health serves the grpc.health.v1.Health protocol (Check, Watch and List) from one readiness
// function, so that it answers what the HTTP readiness probe answers: SERVING while ready,
// NOT_SERVING while starting, while a critical readiness check fails and while draining. The
// overall service ("") and every service registered on the server report that same status; any
// other name is NOT_FOUND (Check) or SERVICE_UNKNOWN (Watch). Health is safe for concurrent use.
type Health struct {
	healthpb.UnimplementedHealthServer
	ready func(context.Context) bool
	poll  time.Duration

	mu      sync.Mutex
	srv     *grpc.Server
	names   map[string]bool // the server's services, read once at the first question (see names)
	changed chan struct{}   // closed and replaced by Update
	closed  chan struct{}   // closed by Close
	done    bool
}

var _ healthpb.HealthServer = (*Health)(nil)

// NewHealth returns a Health that reports ready's answer. WithWatchInterval is its one option.
func NewHealth(ready func(context.Context) bool, opts ...Option) *Health {
	o := newOptions(opts)
	return &Health{ready: ready, poll: o.poll, changed: make(chan struct{}), closed: make(chan struct{})}
}

// Register registers the health service on s, whose services it then reports by name.
func (h *Health) Register(s *grpc.Server) {
	h.mu.Lock()
	h.srv = s
	h.mu.Unlock()
	healthpb.RegisterHealthServer(s, h)
}

// Update tells Watch streams that readiness may have changed (the service became ready, or started
// draining), so that they report it now rather than at their next poll.
func (h *Health) Update() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.done {
		close(h.changed)
		h.changed = make(chan struct{})
	}
}

// Close ends every Watch stream (with UNAVAILABLE), and makes new ones end at once after their
// first answer, so that the server's GracefulStop does not wait for them: call it right before.
func (h *Health) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.done {
		h.done = true
		close(h.closed)
	}
}

// known reports whether service is "" or registered on the server.
func (h *Health) known(service string) bool {
	return service == "" || h.serviceNames()[service]
}

// serviceNames returns the names of the server's services. They are read from the server once, at
// the first question: a question arrives only once the server serves, and grpc-go accepts no
// registration after that, so the set no longer changes (and a Watch stream's poll need not build
// GetServiceInfo's map every second).
func (h *Health) serviceNames() map[string]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.names == nil && h.srv != nil {
		info := h.srv.GetServiceInfo()
		h.names = make(map[string]bool, len(info))
		for name := range info {
			h.names[name] = true
		}
	}
	return h.names
}

func (h *Health) status(ctx context.Context) healthpb.HealthCheckResponse_ServingStatus {
	if h.ready(ctx) {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}

// Check answers the status of req's service.
func (h *Health) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if !h.known(req.GetService()) {
		return nil, status.Error(codes.NotFound, "unknown service")
	}
	return &healthpb.HealthCheckResponse{Status: h.status(ctx)}, nil
}

// List answers the status of every service, the overall "" included.
func (h *Health) List(ctx context.Context, _ *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	st := h.status(ctx)
	out := &healthpb.HealthListResponse{Statuses: map[string]*healthpb.HealthCheckResponse{"": {Status: st}}}
	for name := range h.serviceNames() {
		out.Statuses[name] = &healthpb.HealthCheckResponse{Status: st}
	}
	return out, nil
}

// Watch sends the status of req's service at once and then each time it changes, until the caller
// goes away or Close is called.
func (h *Health) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	ctx := stream.Context()
	last := healthpb.HealthCheckResponse_ServingStatus(-1)
	t := time.NewTicker(h.poll)
	defer t.Stop()
	for {
		h.mu.Lock()
		changed, closed := h.changed, h.closed
		h.mu.Unlock()
		st := healthpb.HealthCheckResponse_SERVICE_UNKNOWN
		if h.known(req.GetService()) {
			st = h.status(ctx)
		}
		if st != last {
			if err := stream.Send(&healthpb.HealthCheckResponse{Status: st}); err != nil {
				return err
			}
			last = st
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-closed:
			return status.Error(codes.Unavailable, "server stopping")
		case <-changed:
		case <-t.C:
		}
	}
}
