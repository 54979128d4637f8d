package bench

// etcd discovery benchmarks, beside the Consul ones of discovery_test.go.
//
// Propagation: how long after a deregistration (the instance's key deleted, as a lease revoke or
// expiry deletes it) on a real single-member etcd a watcher sees the change, for discovery/etcd's
// Registry beside a bare clientv3 watch loop (the floor any etcd client can reach). Needs the etcd
// binary (scripts/install-etcd.sh):
//
//	cd bench && go test -run '^$' -bench EtcdDiscoveryPropagation -benchtime 200x -count 5
//
// Watcher cost: CPU, allocations and bytes per update of a 1,000-instance service, end to end over
// gRPC from a real etcd, beside a bare clientv3 watch that decodes the changed instance only:
//
//	cd bench && go test -run '^$' -bench EtcdDiscoveryWatcher -benchmem -count 6

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/etcd"
)

// startEtcd runs a single etcd member on free loopback ports (bench cannot import the root module's
// internal/etcdtest) and returns a client of it.
func startEtcd(b *testing.B) *clientv3.Client {
	b.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		out, _ := exec.Command("go", "env", "GOPATH").Output()
		bin = filepath.Join(strings.TrimSpace(string(out)), "bin", "etcd")
		if _, err := os.Stat(bin); err != nil {
			b.Fatal("etcd binary not found in PATH or $(go env GOPATH)/bin: run scripts/install-etcd.sh first")
		}
	}
	var ports []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		ports = append(ports, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		_ = ln.Close() // etcd binds it next; another process taking it in between fails loudly
	}
	dir := b.TempDir()
	client, peer := "http://127.0.0.1:"+ports[0], "http://127.0.0.1:"+ports[1]
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "--name=bench", "--data-dir="+filepath.Join(dir, "data"),
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer, "--initial-cluster=bench="+peer,
		// Consul's -dev agent keeps its state in memory: no fsync here either.
		"--unsafe-no-fsync", "--log-level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logf.Close()
	})
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{strings.TrimPrefix(client, "http://")},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Get(ctx, "health")
		cancel()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			b.Fatalf("etcd not ready after 30 s: %v", err)
		}
	}
}

func instanceJSON(b *testing.B, i discovery.Instance) string {
	v, err := json.Marshal(map[string]any{"id": i.ID, "address": i.Address, "port": i.Port, "tags": i.Tags, "meta": i.Meta})
	if err != nil {
		b.Fatal(err)
	}
	return string(v)
}

// BenchmarkEtcdDiscoveryPropagation: each iteration deletes one of two instances, waits until the
// watcher's list no longer has it, puts it again and waits until it is back, spaced by 100 ms as in
// BenchmarkDiscoveryPropagation.
func BenchmarkEtcdDiscoveryPropagation(b *testing.B) {
	c := startEtcd(b)
	ctx := context.Background()
	key := func(id string) string { return etcd.InstanceKey(etcd.DefaultPrefix, "prop", id) }
	val := func(id string) string {
		return instanceJSON(b, discovery.Instance{ID: id, Address: "127.0.0.1", Port: 9000})
	}
	for _, id := range []string{"keep", "flip"} {
		if _, err := c.Put(ctx, key(id), val(id)); err != nil {
			b.Fatal(err)
		}
	}
	run := func(b *testing.B, wait func(n int) time.Time) {
		flipCycles(b, func() error { _, err := c.Delete(ctx, key("flip")); return err },
			func() error { _, err := c.Put(ctx, key("flip"), val("flip")); return err }, wait)
	}

	b.Run("chassis", func(b *testing.B) {
		r, err := etcd.NewRegistry(c)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		w, err := r.Watch("prop")
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		run(b, waitInstances(b, w))
	})

	b.Run("bare-clientv3", func(b *testing.B) {
		// The floor: one prefix watch, a count of keys kept from its events, no decoding, no snapshot.
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		resp, err := c.Get(ctx, etcd.ServiceKey(etcd.DefaultPrefix, "prop"), clientv3.WithPrefix())
		if err != nil {
			b.Fatal(err)
		}
		keys := map[string]bool{}
		for _, kv := range resp.Kvs {
			keys[string(kv.Key)] = true
		}
		ch := c.Watch(wctx, etcd.ServiceKey(etcd.DefaultPrefix, "prop"), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		run(b, func(n int) time.Time {
			for len(keys) != n {
				wr := <-ch
				for _, ev := range wr.Events {
					keys[string(ev.Kv.Key)] = ev.Type == clientv3.EventTypePut
					if ev.Type == clientv3.EventTypeDelete {
						delete(keys, string(ev.Kv.Key))
					}
				}
			}
			return time.Now()
		})
	})
}

func BenchmarkEtcdDiscoveryWatcher1000(b *testing.B) {
	const n = 1000
	c := startEtcd(b)
	ctx := context.Background()
	inst := func(i, port int) discovery.Instance {
		return discovery.Instance{ID: fmt.Sprintf("svc-%04d", i), Address: fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), Port: port,
			Tags: []string{"v1", "blue"}, Meta: map[string]string{"version": "1.2.3", "zone": "eu-1"}}
	}
	for i := range n {
		if _, err := c.Put(ctx, etcd.InstanceKey(etcd.DefaultPrefix, "svc", inst(i, 8080).ID), instanceJSON(b, inst(i, 8080))); err != nil {
			b.Fatal(err)
		}
	}
	// flip re-registers one instance with another port than the last flip's (across runs: b.N
	// restarts from 0): one change, one update.
	flips := 0
	flip := func(int) {
		flips++
		if _, err := c.Put(ctx, etcd.InstanceKey(etcd.DefaultPrefix, "svc", "svc-0000"), instanceJSON(b, inst(0, 8080+flips%2))); err != nil {
			b.Fatal(err)
		}
	}

	b.Run("chassis-grpc", func(b *testing.B) {
		r, err := etcd.NewRegistry(c)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		w, err := r.Watch("svc")
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		s, err := w.Next(ctx, 0)
		if err != nil || len(s.Instances) != n {
			b.Fatalf("first snapshot: %d instances, %v", len(s.Instances), err)
		}
		cpu0 := cpuTime()
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			flip(i)
			if s, err = w.Next(ctx, s.Version); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		// Includes the Put's client side (same process), as the Consul benchmark includes its fake.
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/update")
		b.ReportMetric(retainedPerInstance(s), "B/instance")
	})

	b.Run("bare-clientv3-grpc", func(b *testing.B) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		resp, err := c.Get(ctx, etcd.ServiceKey(etcd.DefaultPrefix, "svc"), clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != n {
			b.Fatal(err)
		}
		ch := c.Watch(wctx, etcd.ServiceKey(etcd.DefaultPrefix, "svc"), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
		cpu0 := cpuTime()
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			flip(i)
			wr := <-ch
			var got discovery.Instance
			if len(wr.Events) != 1 || json.Unmarshal(wr.Events[0].Kv.Value, &got) != nil {
				b.Fatalf("event %+v", wr)
			}
		}
		b.StopTimer()
		b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/update")
	})
}
