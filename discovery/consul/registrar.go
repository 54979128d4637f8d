package consul

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/internal/consulapi"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Registration describes the instance a Registrar announces.
type Registration struct {
	// Name is the service name (required).
	Name string
	// ID must be unique among the instances registered with the agent. Empty means
	// "<name>-<address>-<port>-<8 random hex digits>", unique per process even across restarts.
	ID string
	// Address and Port are what callers dial. Port is required; an empty Address lets Consul use the
	// agent node's address.
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string
	// Weight is the instance's share of traffic while passing; 0 means Consul's default of 1.
	Weight int

	// CheckURL is an HTTP endpoint the agent polls, normally the admin /readyz: 2xx is passing, 429 is
	// warning, anything else critical. Exactly one of CheckURL and TTL must be set.
	CheckURL string
	// CheckInterval and CheckTimeout tune the HTTP check; defaults DefaultCheckInterval and
	// DefaultCheckTimeout.
	CheckInterval time.Duration
	CheckTimeout  time.Duration
	// TTL selects a TTL check instead: the Registrar reports passing every TTL/3 and the agent marks the
	// instance critical when the reports stop (the process hung or died).
	TTL time.Duration
	// DeregisterCriticalAfter makes the agent remove the instance after its check has been critical this
	// long, which cleans up after processes that died without deregistering. Default
	// DefaultDeregisterCriticalAfter; Consul's minimum is one minute.
	DeregisterCriticalAfter time.Duration
}

// Registrar registers one instance with the local Consul agent and keeps it registered: it registers
// again when the agent has lost the service (an agent restarted without its data directory) and, with a
// TTL check, sends the heartbeats. It implements discovery.Registrar.
//
// Register is meant to be called once the service is ready: the check starts as passing, so callers see
// the instance at once. Deregister, at the start of the drain, stops the background work before it
// removes the service. A Registrar is safe for concurrent use; Register after Deregister registers again.
type Registrar struct {
	agent Agent
	reg   *api.AgentServiceRegistration
	ttl   time.Duration
	opts  options
	log   *slog.Logger
	regs  metric.Int64Counter
	fails metric.Int64Gauge // consecutive failures to keep the registration
	// Attribute sets for the two reasons a registration is sent, built once.
	initial, restored metric.MeasurementOption
	service           metric.MeasurementOption

	mu     sync.Mutex // serializes Register and Deregister
	cancel context.CancelFunc
	done   chan struct{}
}

var _ discovery.Registrar = (*Registrar)(nil)

// NewRegistrar validates reg and returns a Registrar for it; nothing is sent to the agent before
// Register. Options: WithResyncInterval, WithBackoff, WithMeterProvider, WithLogger.
func NewRegistrar(agent Agent, reg Registration, opts ...Option) (*Registrar, error) {
	if agent == nil {
		return nil, errors.New("consul: NewRegistrar: nil Agent client")
	}
	var errs []error
	if reg.Name == "" {
		errs = append(errs, errors.New("Name is empty"))
	}
	if reg.Port < 1 || reg.Port > 65535 {
		errs = append(errs, fmt.Errorf("Port %d is not in 1-65535 (register after the listener is bound)", reg.Port))
	}
	switch {
	case reg.CheckURL == "" && reg.TTL <= 0:
		errs = append(errs, errors.New("neither CheckURL nor TTL is set: an instance needs a health check"))
	case reg.CheckURL != "" && reg.TTL > 0:
		errs = append(errs, errors.New("both CheckURL and TTL are set: choose one"))
	case reg.CheckURL != "":
		if u, err := url.Parse(reg.CheckURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("CheckURL %q is not an http(s) URL", reg.CheckURL))
		}
	case reg.TTL > 0 && reg.TTL < time.Second:
		errs = append(errs, fmt.Errorf("TTL %s is below one second", reg.TTL))
	}
	if reg.DeregisterCriticalAfter != 0 && reg.DeregisterCriticalAfter < time.Minute {
		errs = append(errs, fmt.Errorf("DeregisterCriticalAfter %s is below Consul's minimum of 1m", reg.DeregisterCriticalAfter))
	}
	if reg.Weight < 0 {
		errs = append(errs, fmt.Errorf("Weight %d is negative", reg.Weight))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("consul: registration of %q: %w", reg.Name, errors.Join(errs...))
	}

	id := reg.ID
	if id == "" {
		var b [4]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		id = reg.Name + "-" + reg.Address + "-" + strconv.Itoa(reg.Port) + "-" + hex.EncodeToString(b[:])
	}
	o := newOptions(opts)
	r := &Registrar{
		agent: agent, ttl: reg.TTL, opts: o,
		log: o.Logger.With(slog.String("service_id", id)), // the caller's logger names the service: no second "service" key
		initial: metric.WithAttributeSet(attribute.NewSet(
			attribute.String(semconv.AttrPeerService, reg.Name), attribute.String("reason", "initial"))),
		restored: metric.WithAttributeSet(attribute.NewSet(
			attribute.String(semconv.AttrPeerService, reg.Name), attribute.String("reason", "restore"))),
		service: metric.WithAttributeSet(attribute.NewSet(attribute.String(semconv.AttrPeerService, reg.Name))),
	}
	var err error
	meter := o.Meters.Meter(semconv.ScopeDiscovery)
	if r.regs, err = meter.Int64Counter(MetricRegistrations, metric.WithUnit(semconv.UnitRequest),
		metric.WithDescription("Service registrations sent to the Consul agent, by reason (initial or restore).")); err != nil {
		return nil, fmt.Errorf("consul: metrics: %w", err)
	}
	if r.fails, err = meter.Int64Gauge(MetricRegistrationFailures, metric.WithUnit(semconv.UnitError),
		metric.WithDescription("Consecutive failed attempts to keep the registration; 0 while the agent answers.")); err != nil {
		return nil, fmt.Errorf("consul: metrics: %w", err)
	}

	check := &api.AgentServiceCheck{
		CheckID: "service:" + id,
		Name:    "chassis " + reg.Name,
		// The service registers only once ready, so it starts passing: callers see it without waiting
		// for the first check interval.
		Status:                         api.HealthPassing,
		DeregisterCriticalServiceAfter: durationOr(reg.DeregisterCriticalAfter, DefaultDeregisterCriticalAfter).String(),
	}
	if reg.TTL > 0 {
		check.TTL = reg.TTL.String()
	} else {
		check.HTTP = reg.CheckURL
		check.Interval = durationOr(reg.CheckInterval, DefaultCheckInterval).String()
		check.Timeout = durationOr(reg.CheckTimeout, DefaultCheckTimeout).String()
	}
	r.reg = &api.AgentServiceRegistration{
		ID: id, Name: reg.Name, Address: reg.Address, Port: reg.Port,
		Tags: append([]string(nil), reg.Tags...), Meta: cloneMap(reg.Meta), Check: check,
	}
	if reg.Weight > 0 {
		r.reg.Weights = &api.AgentWeights{Passing: reg.Weight, Warning: 1}
	}
	return r, nil
}

// ID returns the service ID the instance is registered under.
func (r *Registrar) ID() string { return r.reg.ID }

// Register registers the instance and starts keeping it registered. It returns the agent's error if the
// first registration fails (nothing keeps running then). Calling it while registered does nothing.
func (r *Registrar) Register(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel != nil {
		return nil
	}
	if err := r.agent.Register(ctx, r.reg); err != nil {
		return fmt.Errorf("consul: register %q: %w", r.reg.ID, err)
	}
	r.regs.Add(ctx, 1, r.initial)
	r.fails.Record(ctx, 0, r.service)
	r.log.Info("consul: registered")
	loopCtx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	go r.keep(loopCtx, r.done)
	return nil
}

// Deregister stops the heartbeats and re-registration, then removes the instance from the agent. It
// does nothing if the instance is not registered. If the agent cannot be reached the error is returned
// and the agent's DeregisterCriticalAfter removes the instance later.
func (r *Registrar) Deregister(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	<-r.done
	r.cancel, r.done = nil, nil
	r.fails.Record(ctx, 0, r.service) // not registered on purpose: nothing is failing
	if err := r.agent.Deregister(ctx, r.reg.ID); err != nil {
		return fmt.Errorf("consul: deregister %q: %w", r.reg.ID, err)
	}
	r.log.Info("consul: deregistered")
	return nil
}

// keep runs the anti-entropy loop: TTL heartbeats and a periodic check that the agent still has the
// service. Failures are retried with backoff and logged; there is no caller to return them to.
func (r *Registrar) keep(ctx context.Context, done chan struct{}) {
	defer close(done)
	resync := time.NewTicker(r.opts.resync)
	defer resync.Stop()
	var heartbeat <-chan time.Time
	if r.ttl > 0 {
		t := time.NewTicker(r.ttl / 3)
		defer t.Stop()
		heartbeat = t.C
	}
	failures := 0
	var retry *time.Timer
	var retryC <-chan time.Time
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		var err error
		select {
		case <-ctx.Done():
			return
		case <-heartbeat:
			err = r.heartbeat(ctx)
		case <-resync.C:
			err = r.resync(ctx)
		case <-retryC:
			retryC = nil
			err = r.resync(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if failures > 0 {
				r.fails.Record(ctx, 0, r.service)
			}
			failures = 0
			continue
		}
		failures++
		r.fails.Record(ctx, int64(failures), r.service)
		r.log.Warn("consul: keeping the registration failed", slog.Any("error", err), slog.Int("failures", failures))
		if retryC == nil {
			// Retry sooner than the next tick, with backoff so a dead agent is not hammered.
			d := min(r.opts.backoff.Delay(failures), r.opts.resync)
			if retry == nil {
				retry = time.NewTimer(d)
			} else {
				retry.Reset(d)
			}
			retryC = retry.C
		}
	}
}

func (r *Registrar) heartbeat(ctx context.Context) error {
	err := r.agent.UpdateTTL(ctx, r.reg.Check.CheckID, "", api.HealthPassing)
	if consulapi.IsNotFound(err) {
		return r.restore(ctx) // the agent forgot the check, hence the service
	}
	if err != nil {
		return fmt.Errorf("ttl heartbeat: %w", err)
	}
	return nil
}

func (r *Registrar) resync(ctx context.Context) error {
	ok, err := r.agent.Registered(ctx, r.reg.ID)
	if err != nil {
		return fmt.Errorf("resync: %w", err)
	}
	if ok {
		return nil
	}
	return r.restore(ctx)
}

func (r *Registrar) restore(ctx context.Context) error {
	if err := r.agent.Register(ctx, r.reg); err != nil {
		return fmt.Errorf("register again: %w", err)
	}
	r.regs.Add(ctx, 1, r.restored)
	r.log.Warn("consul: the agent had lost the service; registered it again")
	return nil
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
