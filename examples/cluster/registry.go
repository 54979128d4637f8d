package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/consul"
	"github.com/cloudchassis/kit/discovery/discoverytest"
)

// registry is where the instances register and find each other: a Consul HTTP API or etcd at Addr.
type registry interface {
	// Kind names it for the terminal and the dashboard.
	Kind() string
	// Addr is the host:port the services and the launcher talk to.
	Addr() string
	// Env is the discovery environment of the services (DISCOVERY and the registry's address).
	Env() []string
	// Watch follows service for the launcher's own client (the load's edge); release frees it.
	Watch(service string) (w discovery.Watcher, release func(), err error)
	// List returns the registered instances of service, for the dashboard.
	List(ctx context.Context, service string) ([]RegistryItem, error)
	// Outage makes the registry unreachable (down=true) or reachable again.
	Outage(down bool) error
	Close() error
}

// consulAPI is the registry side of the two Consul registries: the HTTP API at addr.
type consulAPI struct {
	addr   string
	client *api.Client
}

func newConsulAPI(addr string) (consulAPI, error) {
	c, err := api.NewClient(&api.Config{Address: addr, WaitTime: time.Second})
	return consulAPI{addr: addr, client: c}, err
}

func (c consulAPI) Env() []string { return []string{"DISCOVERY=consul", "CONSUL_HTTP_ADDR=" + c.addr} }

func (c consulAPI) Watch(service string) (discovery.Watcher, func(), error) {
	reg, err := consul.NewRegistry(consul.NewClient(c.client))
	return watchOn(reg, err, service, func(s string) (*consul.Watcher, error) { return reg.Watch(s) })
}

// watchOn opens a watch of service on a registry just built (or the error building it), and
// returns the release of both.
func watchOn[W interface {
	discovery.Watcher
	Close() error
}](reg io.Closer, err error, service string, watch func(string) (W, error)) (discovery.Watcher, func(), error) {
	if err != nil {
		return nil, nil, err
	}
	w, err := watch(service)
	if err != nil {
		_ = reg.Close()
		return nil, nil, err
	}
	return w, func() { _ = w.Close(); _ = reg.Close() }, nil
}

func (c consulAPI) List(ctx context.Context, service string) ([]RegistryItem, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	entries, _, err := c.client.Health().Service(service, "", false, (&api.QueryOptions{AllowStale: true}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	var out []RegistryItem
	for _, e := range entries {
		out = append(out, RegistryItem{
			ServiceID: e.Service.ID, Instance: e.Service.Meta["instance_id"],
			Address: e.Service.Address + ":" + itoa(e.Service.Port), Status: e.Checks.AggregatedStatus(),
		})
	}
	return out, nil
}

// embeddedRegistry is discoverytest's fake Consul HTTP API, in the launcher's process.
type embeddedRegistry struct {
	consulAPI
	s *discoverytest.Server
}

func startEmbedded() (*embeddedRegistry, error) {
	s := discoverytest.NewServer()
	if err := s.Start("127.0.0.1:0"); err != nil {
		return nil, err
	}
	c, err := newConsulAPI(s.Addr())
	if err != nil {
		_ = s.Close()
		return nil, err
	}
	return &embeddedRegistry{consulAPI: c, s: s}, nil
}

func (r *embeddedRegistry) Kind() string { return "embedded fake Consul" }
func (r *embeddedRegistry) Addr() string { return r.s.Addr() }
func (r *embeddedRegistry) Close() error { return r.s.Close() }
func (r *embeddedRegistry) Outage(down bool) error {
	if down {
		return r.s.Pause()
	}
	return r.s.Resume()
}

// consulRegistry is a real Consul agent, behind a TCP proxy that the launcher can cut to simulate
// an outage: the agent keeps its state and its health checks, as when a network partition separates
// the services from their agent.
type consulRegistry struct {
	consulAPI
	kind  string
	proxy *proxy
	agent *exec.Cmd // nil for an agent the launcher did not start
	done  chan struct{}
	dir   string
}

func (r *consulRegistry) Kind() string           { return r.kind }
func (r *consulRegistry) Addr() string           { return r.proxy.Addr() }
func (r *consulRegistry) Outage(down bool) error { return r.proxy.SetDown(down) }

func (r *consulRegistry) Close() error {
	err := r.proxy.Close()
	if r.agent != nil {
		_ = r.agent.Process.Signal(os.Interrupt) // consul leaves gracefully on SIGINT
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			_ = r.agent.Process.Kill()
			<-r.done
		}
		_ = os.RemoveAll(r.dir)
	}
	return err
}

// useConsul fronts the agent at addr with a proxy.
func useConsul(addr string) (*consulRegistry, error) {
	p, err := newProxy(addr)
	if err != nil {
		return nil, err
	}
	c, err := newConsulAPI(p.Addr())
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	return &consulRegistry{consulAPI: c, kind: "Consul at " + addr, proxy: p}, nil
}

// findBinary looks for a binary (consul, etcd) on PATH, then in $(go env GOPATH)/bin, where
// scripts/install-<name>.sh puts it.
func findBinary(goTool, name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	out, err := exec.Command(goTool, "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(string(trimNL(out)), "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no %s binary on PATH or in $(go env GOPATH)/bin: run scripts/install-%s.sh", name, name)
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// startLocalConsul runs `consul agent -dev` on free loopback ports and waits for its leader.
func startLocalConsul(ctx context.Context, bin string) (*consulRegistry, error) {
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "chassis-demo-consul-")
	if err != nil {
		return nil, err
	}
	httpAddr := "127.0.0.1:" + strconv.Itoa(ports[0])
	cmd := exec.Command(bin, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(ports[0]), "-dns-port", "-1", "-grpc-port", strconv.Itoa(ports[1]),
		"-grpc-tls-port", "-1", "-server-port", strconv.Itoa(ports[2]),
		"-serf-lan-port", strconv.Itoa(ports[3]), "-serf-wan-port", strconv.Itoa(ports[4]),
		"-data-dir", dir, "-log-level", "warn")
	detach(cmd)
	logs := &tailWriter{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("consul agent: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r := &consulRegistry{kind: "local Consul agent (-dev)", agent: cmd, done: done, dir: dir}
	fail := func(err error) (*consulRegistry, error) {
		_ = cmd.Process.Kill()
		<-done
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("%w\n%s", err, logs.String())
	}
	client, err := api.NewClient(&api.Config{Address: httpAddr})
	if err != nil {
		return fail(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader, err := client.Status().Leader()
		if err == nil && leader != "" {
			break
		}
		select {
		case <-done:
			return fail(errors.New("consul agent exited"))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(errors.New("consul agent elected no leader within 30s"))
		}
	}
	if r.proxy, err = newProxy(httpAddr); err != nil {
		return fail(err)
	}
	if r.consulAPI, err = newConsulAPI(r.proxy.Addr()); err != nil {
		_ = r.proxy.Close()
		return fail(err)
	}
	return r, nil
}

// freePorts reserves n loopback ports and releases them for a child to bind. Another process could
// take one in between; on a test machine's loopback that is rare and fails loudly.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			_ = l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tailWriter keeps the last 8 KiB written to it.
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > 8<<10 {
		w.buf = w.buf[len(w.buf)-8<<10:]
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}

// proxy relays TCP connections from a loopback port to target; SetDown(true) closes the listener
// and every relayed connection, so clients see "connection refused" and broken blocking queries,
// and SetDown(false) listens again on the same port.
type proxy struct {
	target string

	mu     sync.Mutex
	addr   string
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func newProxy(target string) (*proxy, error) {
	p := &proxy{target: target, conns: map[net.Conn]struct{}{}}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.listen("127.0.0.1:0"); err != nil {
		return nil, err
	}
	return p, nil
}

// listen binds addr and accepts in a goroutine that ends when the listener closes. p.mu is held.
func (p *proxy) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("registry proxy: %w", err)
	}
	p.ln, p.addr = ln, ln.Addr().String()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.relay(c) })
		}
	})
	return nil
}

func (p *proxy) relay(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c, up) {
		return
	}
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
	}
	wg.Go(func() { pipe(up, c) })
	wg.Go(func() { pipe(c, up) })
	wg.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// track registers a relayed pair, or closes it if the proxy went down meanwhile.
func (p *proxy) track(c, up net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		_ = c.Close()
		_ = up.Close()
		return false
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	return true
}

func (p *proxy) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

func (p *proxy) SetDown(down bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("registry proxy closed")
	}
	if !down {
		if p.ln != nil {
			return nil
		}
		return p.listen(p.addr)
	}
	p.cutLocked()
	return nil
}

func (p *proxy) cutLocked() {
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
}

// Close stops the proxy for good and waits for its goroutines.
func (p *proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.cutLocked()
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}
