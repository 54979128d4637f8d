package chassis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/etcd"
	"github.com/cloudchassis/kit/internal/backoff"
	"github.com/cloudchassis/kit/lifecycle"
)

// DiscoveryEtcd selects etcd (DISCOVERY=etcd, ETCD_ENDPOINTS).
const DiscoveryEtcd = "etcd"

// Etcd returns the etcd client built from ETCD_ENDPOINTS and etcdctl's TLS and auth variables when
// DISCOVERY is etcd, else nil. It is closed after the registry, at the end of the shutdown.
func (s *Service) Etcd() *clientv3.Client { return s.etcd }

// setupEtcd connects to etcd and installs the registry's resolver and, with REGISTER, a registrar.
func (s *Service) setupEtcd() error {
	cc, err := s.settings.Settings.ClientConfig()
	if err != nil {
		return &config.Error{Problems: splitProblems(err)}
	}
	// clientv3 logs every retried call at warn; the registry and the registrar report what matters.
	cc.Logger = s.log.Named("etcd").WithOptions(zap.IncreaseLevel(zapcore.ErrorLevel))
	client, err := clientv3.New(cc) // does not wait for a connection
	if err != nil {
		return fmt.Errorf("chassis: etcd client: %w", err)
	}
	s.etcd = client
	// Closed last: the registry (and coordination) use it until they stop.
	s.closers = append(s.closers, lifecycle.Hook{Name: "etcd client", Stop: func(context.Context) error { return client.Close() }})
	consistency, _ := etcd.ParseConsistency(s.settings.Consistency)
	opts := []etcd.Option{etcd.WithPrefix(s.settings.Prefix), etcd.WithMeterProvider(s.tel.MeterProvider()), etcd.WithLogger(s.tel.Slog())}
	if s.opts.resolver == nil {
		reg, err := etcd.NewRegistry(client, append(opts, etcd.WithConsistency(consistency),
			etcd.WithMaxStaleness(s.settings.DiscoveryMaxStaleness))...)
		if err != nil {
			return fmt.Errorf("chassis: %w", err)
		}
		s.opts.resolver = func(service string) (discovery.Watcher, func(), error) {
			w, err := reg.Watch(service)
			if err != nil {
				return nil, nil, err
			}
			return w, func() { _ = w.Close() }, nil
		}
		s.closers = append(s.closers, lifecycle.Hook{Name: "etcd registry", Stop: func(context.Context) error { return reg.Close() }})
	}
	if s.opts.registrar == nil && s.settings.Register {
		s.opts.registrar = func(svc *Service) (discovery.Registrar, error) {
			return &etcdRegistrar{svc: svc, client: client, opts: opts}, nil
		}
	}
	return nil
}

// etcdRegistrar registers the instance once etcd answers, retrying unreachable or leaderless etcd
// with backoff until START_TIMEOUT, like the Consul registration. Without ADVERTISE_ADDRESS or a
// specific HOST, it registers the local address this host reaches etcd from (Consul would use the
// agent's node address; etcd has no agent).
type etcdRegistrar struct {
	svc    *Service
	client *clientv3.Client
	opts   []etcd.Option
	reg    *etcd.Registrar
}

var _ discovery.Registrar = (*etcdRegistrar)(nil)

// Register implements discovery.Registrar.
func (e *etcdRegistrar) Register(ctx context.Context) error {
	if e.reg == nil {
		c := e.svc.registration()
		if c.Address == "" {
			addr, err := localAddrTowards(e.client.Endpoints())
			if err != nil {
				return err
			}
			c.Address = addr
		}
		r, err := etcd.NewRegistrar(e.client, etcd.Registration{Name: c.Name, Address: c.Address, Port: c.Port,
			Tags: c.Tags, Meta: c.Meta, Weight: c.Weight, TTL: e.svc.settings.LeaseTTL}, e.opts...)
		if err != nil {
			return err
		}
		e.reg = r
	}
	policy := backoff.Policy{Base: registerRetryBase, Max: registerRetryMax}
	for attempt := 1; ; attempt++ {
		err := e.reg.Register(ctx)
		if err == nil || !etcdTransient(err) {
			return err
		}
		if attempt == 1 {
			e.svc.log.Warn(fmt.Sprintf("etcd unreachable at %s: retrying until START_TIMEOUT (%s)",
				strings.Join(e.client.Endpoints(), ","), e.svc.settings.StartTimeout), zap.Error(err))
		}
		if ctx.Err() != nil || backoff.Sleep(ctx, policy.Delay(attempt)) != nil {
			return fmt.Errorf("etcd at %s (ETCD_ENDPOINTS) within START_TIMEOUT (%d attempts): %w",
				strings.Join(e.client.Endpoints(), ","), attempt, err)
		}
	}
}

// Deregister implements discovery.Registrar.
func (e *etcdRegistrar) Deregister(ctx context.Context) error {
	if e.reg == nil {
		return nil
	}
	return e.reg.Deregister(ctx)
}

// etcdTransient reports whether a failed registration may succeed later: etcd unreachable, slow or
// without a leader. A refused permission or a bad request is not.
func etcdTransient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrTimeout) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// localAddrTowards returns the local address the host would use to reach the first endpoint (no
// packet is sent: a UDP "connection" only picks the route).
func localAddrTowards(endpoints []string) (string, error) {
	if len(endpoints) == 0 {
		return "", errors.New("no etcd endpoint to pick a local address from: set ADVERTISE_ADDRESS")
	}
	c, err := net.Dial("udp", endpoints[0])
	if err != nil {
		return "", fmt.Errorf("picking the address to register (set ADVERTISE_ADDRESS): %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}
