package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/consul"
	"github.com/cloudchassis/kit/health"
	"github.com/cloudchassis/kit/internal/backoff"
)

// local is the co-located service: a readiness check of the ambassador asks its health path, and
// the ambassador registers it in Consul once ready and withdraws it at the start of its drain. Its
// Consul check is the ambassador's /readyz, so the service leaves the healthy list both when it
// fails its health path and while the ambassador drains.
type local struct {
	cfg    Config
	client *http.Client
}

// newLocal adds the readiness check of the co-located service to svc.
func newLocal(svc *chassis.Service, cfg Config) *local {
	l := &local{cfg: cfg, client: &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute, DisableCompression: true},
		// Its health path answers, not whatever it redirects to.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	svc.AddCheck(health.Readiness, health.Check{Name: "local " + cfg.LocalName, Func: l.check, Timeout: cfg.LocalTimeout})
	svc.OnStop("local health client", func(context.Context) error { l.client.CloseIdleConnections(); return nil })
	return l
}

// check asks the local service's health path: 2xx is healthy.
func (l *local) check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+l.cfg.LocalAddr+l.cfg.LocalHealth, nil)
	if err != nil {
		return err
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s at %s: %w", l.cfg.LocalName, l.cfg.LocalAddr, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s: GET %s answered %d", l.cfg.LocalName, l.cfg.LocalHealth, resp.StatusCode)
	}
	return nil
}

// registrar is the ambassador's chassis registrar: it registers the local service, not the
// ambassador (callers never find the ambassador through discovery: it is on their node). Without
// AMBASSADOR_LOCAL_NAME, Consul, or with REGISTER=false, it registers nothing.
func (a *ambassador) registrar(svc *chassis.Service) (discovery.Registrar, error) {
	if a.local == nil || svc.Consul() == nil || !svc.Settings().Register {
		if a.local != nil {
			svc.Logger().Info("AMBASSADOR_LOCAL_NAME: not registered (needs DISCOVERY=consul and REGISTER=true); its health is part of /readyz")
		}
		return noRegistrar{}, nil
	}
	reg, err := a.local.registration(svc)
	if err != nil {
		return nil, err
	}
	r, err := consul.NewRegistrar(consul.NewClient(svc.Consul()), reg,
		consul.WithMeterProvider(svc.Telemetry().MeterProvider()), consul.WithLogger(svc.Slog()))
	if err != nil {
		return nil, err
	}
	return retryingRegistrar{r}, nil
}

// registration describes the local service: its advertised address and port, the ambassador's
// SERVICE_TAGS and SERVICE_META (the ambassador does not register itself, so they are the local
// service's), and an HTTP check on the ambassador's /readyz.
func (l *local) registration(svc *chassis.Service) (consul.Registration, error) {
	host, port, _ := net.SplitHostPort(l.cfg.LocalAddr)
	p, err := strconv.Atoi(port)
	if err != nil {
		return consul.Registration{}, fmt.Errorf("AMBASSADOR_LOCAL_ADDR %q: %w", l.cfg.LocalAddr, err)
	}
	addr := l.cfg.LocalAdvertise
	if ip := net.ParseIP(host); addr == "" && ip != nil && !ip.IsLoopback() && !ip.IsUnspecified() {
		addr = host
	}
	if addr == "" {
		addr = svc.Settings().AdvertiseAddress // empty: Consul gives the node's address
	}
	// The agent runs on this node: it reaches the admin port on its bound address, or loopback.
	// The agent checks the ambassador's admin port where a chassis service's would be checked:
	// ADVERTISE_ADDRESS when set (an agent in another network namespace reaches it there), else the
	// bound address, else loopback (an agent on the node).
	checkHost, adminPort, _ := net.SplitHostPort(svc.AdminAddr())
	if a := svc.Settings().AdvertiseAddress; a != "" {
		checkHost = a
	} else if ip := net.ParseIP(checkHost); ip == nil || ip.IsUnspecified() {
		checkHost = "127.0.0.1"
	}
	st := svc.Settings()
	return consul.Registration{
		Name: l.cfg.LocalName, Address: addr, Port: p, Tags: st.ServiceTags, Meta: st.ServiceMeta,
		CheckURL:      "http://" + net.JoinHostPort(checkHost, adminPort) + "/readyz",
		CheckInterval: st.ConsulCheckInterval, // CONSUL_CHECK_INTERVAL, as for a chassis service
	}, nil
}

// retryingRegistrar retries the first registration while the agent does not answer (it may start
// beside the ambassador), within the start's deadline; a 4xx (a refused token) fails at once.
type retryingRegistrar struct{ *consul.Registrar }

func (r retryingRegistrar) Register(ctx context.Context) error {
	policy := backoff.Policy{Base: 100 * time.Millisecond, Max: 2 * time.Second}
	for attempt := 1; ; attempt++ {
		err := r.Registrar.Register(ctx)
		var se api.StatusError
		if err == nil || (errors.As(err, &se) && se.Code < 500) {
			return err
		}
		if serr := backoff.Sleep(ctx, policy.Delay(attempt)); serr != nil {
			return fmt.Errorf("%w (%d attempts)", err, attempt)
		}
	}
}

// noRegistrar registers nothing.
type noRegistrar struct{}

func (noRegistrar) Register(context.Context) error   { return nil }
func (noRegistrar) Deregister(context.Context) error { return nil }
