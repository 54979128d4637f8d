package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/etcd"
)

// etcdLeaseTTL is the services' ETCD_LEASE_TTL in the demo: a killed instance leaves etcd within it.
const etcdLeaseTTL = 5 * time.Second

// etcdRegistry is a local single-member etcd behind the outage proxy (DISCOVERY=etcd for the
// services). Health is the lease: an instance that is registered is listed as passing.
type etcdRegistry struct {
	proxy  *proxy
	member *exec.Cmd
	done   chan struct{}
	dir    string
	client *clientv3.Client // through the proxy, as the services see etcd
}

func (r *etcdRegistry) Kind() string           { return "local etcd member" }
func (r *etcdRegistry) Addr() string           { return r.proxy.Addr() }
func (r *etcdRegistry) Outage(down bool) error { return r.proxy.SetDown(down) }

func (r *etcdRegistry) Env() []string {
	return []string{"DISCOVERY=etcd", "ETCD_ENDPOINTS=" + r.proxy.Addr(), "ETCD_LEASE_TTL=" + etcdLeaseTTL.String()}
}

func (r *etcdRegistry) Watch(service string) (discovery.Watcher, func(), error) {
	reg, err := etcd.NewRegistry(r.client)
	return watchOn(reg, err, service, reg.Watch)
}

func (r *etcdRegistry) List(ctx context.Context, service string) ([]RegistryItem, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := r.client.Get(ctx, etcd.ServiceKey(etcd.DefaultPrefix, service), clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return nil, err
	}
	var out []RegistryItem
	for _, kv := range resp.Kvs {
		var in discovery.Instance
		if json.Unmarshal(kv.Value, &in) != nil {
			continue
		}
		out = append(out, RegistryItem{ServiceID: in.ID, Instance: in.Meta["instance_id"],
			Address: in.HostPort(), Status: "passing"})
	}
	return out, nil
}

func (r *etcdRegistry) Close() error {
	_ = r.client.Close()
	err := r.proxy.Close()
	_ = r.member.Process.Signal(os.Interrupt)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.member.Process.Kill()
		<-r.done
	}
	_ = os.RemoveAll(r.dir)
	return err
}

// startLocalEtcd runs one etcd member on free loopback ports and waits until it answers.
func startLocalEtcd(ctx context.Context, bin string) (*etcdRegistry, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "chassis-demo-etcd-")
	if err != nil {
		return nil, err
	}
	client, peer := "http://127.0.0.1:"+strconv.Itoa(ports[0]), "http://127.0.0.1:"+strconv.Itoa(ports[1])
	cmd := exec.Command(bin, "--name=demo", "--data-dir="+filepath.Join(dir, "data"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer, "--initial-cluster=demo="+peer,
		"--log-level=warn")
	detach(cmd)
	logs := &tailWriter{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("etcd: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r := &etcdRegistry{member: cmd, done: done, dir: dir}
	fail := func(err error) (*etcdRegistry, error) {
		_ = cmd.Process.Kill()
		<-done
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("%w\n%s", err, logs.String())
	}
	if r.proxy, err = newProxy("127.0.0.1:" + strconv.Itoa(ports[0])); err != nil {
		return fail(err)
	}
	if r.client, err = clientv3.New(clientv3.Config{Endpoints: []string{r.proxy.Addr()}, DialTimeout: 2 * time.Second,
		Logger: zap.NewNop()}); err != nil {
		_ = r.proxy.Close()
		return fail(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := r.client.Get(cctx, "ready")
		cancel()
		if err == nil {
			return r, nil
		}
		select {
		case <-done:
			err = errors.New("etcd exited")
		case <-ctx.Done():
			err = ctx.Err()
		case <-time.After(100 * time.Millisecond):
			if time.Now().Before(deadline) {
				continue
			}
			err = fmt.Errorf("etcd not answering within 30s: %w", err)
		}
		_ = r.client.Close()
		_ = r.proxy.Close()
		return fail(err)
	}
}
