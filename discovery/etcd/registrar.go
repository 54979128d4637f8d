package etcd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/internal/obs"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Registration describes the instance a Registrar announces.
type Registration struct {
	// Name is the service name (required; no '/').
	Name string
	// ID must be unique among the service's instances. Empty means
	// "<name>-<address>-<port>-<8 random hex digits>", unique per process even across restarts.
	ID string
	// Address and Port are what callers dial; both are required (etcd has no agent to default the
	// address to).
	Address string
	Port    int
	Tags    []string
	Meta    map[string]string
	// Weight is the instance's share of traffic; 0 means the default of 1.
	Weight int
	// TTL is the lease's time to live: how long the instance stays listed after its process died
	// without deregistering. Default DefaultLeaseTTL; at least 2 s (etcd raises shorter TTLs to 1.5
	// election timeouts anyway).
	TTL time.Duration
}

// Registrar writes one instance under a lease and keeps the lease alive; it implements
// discovery.Registrar. Health is the lease: a process that dies stops renewing it, and etcd deletes
// the key when the TTL runs out. When the lease is lost while registered (etcd restarted or was
// unreachable for longer than the TTL, a partition healed after the lease expired), the Registrar
// writes the instance again under a new lease, retrying with backoff.
//
// Register is meant to be called once the service is ready; Deregister, at the start of the drain,
// stops the keep-alive and revokes the lease, which deletes the key at once. A Registrar is safe for
// concurrent use; Register after Deregister registers again.
type Registrar struct {
	client leaseKV
	key    string
	value  []byte
	id     string
	ttl    time.Duration
	opts   options
	log    *slog.Logger
	regs   metric.Int64Counter
	fails  metric.Int64Gauge
	// Attribute sets for the two reasons a registration is written, built once.
	initial, restored, service metric.MeasurementOption

	mu     sync.Mutex // serializes Register and Deregister
	cancel context.CancelFunc
	done   chan struct{}
	lease  clientv3.LeaseID // the current lease, guarded by leaseMu
	// leaseMu guards lease, which the keep-alive loop replaces after a loss.
	leaseMu sync.Mutex
}

var _ discovery.Registrar = (*Registrar)(nil)

// leaseKV is the part of *clientv3.Client a Registrar uses.
type leaseKV interface {
	clientv3.Lease
	Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error)
	// Ctx is done once the client is closed.
	Ctx() context.Context
}

// NewRegistrar validates reg and returns a Registrar for it; nothing is written before Register.
// Options: WithPrefix, WithRequestTimeout, WithBackoff, WithMeterProvider, WithLogger.
func NewRegistrar(client *clientv3.Client, reg Registration, opts ...Option) (*Registrar, error) {
	if client == nil {
		return nil, errors.New("etcd: NewRegistrar: nil client")
	}
	return newRegistrar(client, reg, opts)
}

func newRegistrar(client leaseKV, reg Registration, opts []Option) (*Registrar, error) {
	var errs []error
	if reg.Name == "" {
		errs = append(errs, errors.New("Name is empty"))
	}
	for _, s := range []string{reg.Name, reg.ID} {
		if strings.Contains(s, "/") {
			errs = append(errs, fmt.Errorf("%q contains '/', which the key layout reserves", s))
		}
	}
	if reg.Address == "" {
		errs = append(errs, errors.New("Address is empty: etcd has no agent to fill it in"))
	}
	if reg.Port < 1 || reg.Port > 65535 {
		errs = append(errs, fmt.Errorf("Port %d is not in 1-65535 (register after the listener is bound)", reg.Port))
	}
	if reg.TTL == 0 {
		reg.TTL = DefaultLeaseTTL
	}
	if reg.TTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("TTL %s is below 2s", reg.TTL))
	}
	if reg.Weight < 0 {
		errs = append(errs, fmt.Errorf("Weight %d is negative", reg.Weight))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("etcd: registration of %q: %w", reg.Name, errors.Join(errs...))
	}
	id := reg.ID
	if id == "" {
		var b [4]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		id = reg.Name + "-" + reg.Address + "-" + strconv.Itoa(reg.Port) + "-" + hex.EncodeToString(b[:])
	}
	value, err := encode(discovery.Instance{ID: id, Address: reg.Address, Port: reg.Port, Tags: reg.Tags, Meta: reg.Meta, Weight: reg.Weight})
	if err != nil {
		return nil, fmt.Errorf("etcd: registration of %q: %w", reg.Name, err)
	}
	o := newOptions(opts)
	r := &Registrar{
		client: client, key: InstanceKey(o.prefix, reg.Name, id), value: value, id: id, ttl: reg.TTL, opts: o,
		log: o.Logger.With(slog.String("service_id", id)),
		initial: metric.WithAttributeSet(attribute.NewSet(
			attribute.String(semconv.AttrPeerService, reg.Name), attribute.String("reason", "initial"))),
		restored: metric.WithAttributeSet(attribute.NewSet(
			attribute.String(semconv.AttrPeerService, reg.Name), attribute.String("reason", "restore"))),
		service: serviceAttrs(reg.Name),
	}
	in := obs.NewInstruments(o.Meters, semconv.ScopeDiscovery)
	r.regs = in.Counter(MetricRegistrations, semconv.UnitRequest,
		"Service registrations written to etcd, by reason (initial or restore).")
	r.fails = in.Gauge(MetricRegistrationFailures, semconv.UnitError,
		"Consecutive failed attempts to register again after the lease was lost; 0 while registered.")
	if err := in.Err(); err != nil {
		return nil, fmt.Errorf("etcd: metrics: %w", err)
	}
	return r, nil
}

// ID returns the instance's ID, the last segment of its key.
func (r *Registrar) ID() string { return r.id }

// Key returns the instance's key.
func (r *Registrar) Key() string { return r.key }

// Register writes the instance under a new lease and starts keeping it alive. It returns etcd's
// error if the first write fails (nothing keeps running then). Calling it while registered does
// nothing.
func (r *Registrar) Register(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel != nil {
		return nil
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	ka, err := r.put(ctx, loopCtx)
	if err != nil {
		cancel()
		return fmt.Errorf("etcd: register %q: %w", r.key, err)
	}
	r.regs.Add(ctx, 1, r.initial)
	r.fails.Record(ctx, 0, r.service)
	r.log.Info("etcd: registered", slog.String("key", r.key), slog.Duration("ttl", r.ttl))
	r.cancel, r.done = cancel, make(chan struct{})
	go r.keep(loopCtx, ka, r.done)
	return nil
}

// put grants a lease, writes the key under it and starts its keep-alive, which runs until loopCtx
// ends. ctx bounds the grant and the write.
func (r *Registrar) put(ctx, loopCtx context.Context) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.timeout)
	defer cancel()
	grant, err := r.client.Grant(ctx, int64((r.ttl+time.Second-1)/time.Second))
	if err != nil {
		return nil, fmt.Errorf("grant lease: %w", err)
	}
	if _, err := r.client.Put(ctx, r.key, string(r.value), clientv3.WithLease(grant.ID)); err != nil {
		r.revoke(grant.ID)
		return nil, fmt.Errorf("put: %w", err)
	}
	ka, err := r.client.KeepAlive(loopCtx, grant.ID)
	if err != nil {
		r.revoke(grant.ID)
		return nil, fmt.Errorf("keep-alive: %w", err)
	}
	r.leaseMu.Lock()
	r.lease = grant.ID
	r.leaseMu.Unlock()
	return ka, nil
}

// revoke drops a lease that is no longer wanted, in the background of nothing: best effort, bounded.
func (r *Registrar) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), r.opts.timeout)
	defer cancel()
	_, _ = r.client.Revoke(ctx, id) // an unrevoked lease expires by itself
}

// keep drains the keep-alive responses. clientv3 closes the channel when the lease is gone: etcd
// answered that it expired or does not exist, or no renewal succeeded for a whole TTL. The key went
// (or will go) with the lease, so the instance is written again under a new one.
func (r *Registrar) keep(ctx context.Context, ka <-chan *clientv3.LeaseKeepAliveResponse, done chan struct{}) {
	defer close(done)
	for {
		for range ka { //nolint:revive // the responses only prove the lease is alive
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("etcd: registration lease lost; registering again")
		for failures := 1; ; failures++ {
			var err error
			if ka, err = r.put(ctx, ctx); err == nil {
				r.regs.Add(ctx, 1, r.restored)
				r.fails.Record(ctx, 0, r.service)
				r.log.Info("etcd: registered again", slog.Int("attempts", failures))
				break
			}
			if ctx.Err() != nil {
				return
			}
			if r.client.Ctx().Err() != nil {
				r.log.Error("etcd: the client was closed before Deregister; the registration is no longer kept")
				return
			}
			r.fails.Record(ctx, int64(failures), r.service)
			d := r.opts.backoff.Delay(failures)
			r.log.Warn("etcd: registering again failed", slog.Any("error", err), slog.Int("failures", failures), slog.Duration("retry_in", d))
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// Deregister stops the keep-alive and revokes the lease, which deletes the key. It does nothing if
// the instance is not registered. If etcd cannot be reached the error is returned and the key goes
// when the lease expires, within the TTL.
func (r *Registrar) Deregister(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	<-r.done
	r.cancel, r.done = nil, nil
	r.fails.Record(ctx, 0, r.service)
	r.leaseMu.Lock()
	id := r.lease
	r.leaseMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, r.opts.timeout)
	defer cancel()
	if _, err := r.client.Revoke(ctx, id); err != nil {
		return fmt.Errorf("etcd: deregister %q: revoke lease: %w (the key expires with the lease within %s)", r.key, err, r.ttl)
	}
	r.log.Info("etcd: deregistered", slog.String("key", r.key))
	return nil
}
