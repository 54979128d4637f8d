package chassis_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/etcd"
	"github.com/cloudchassis/kit/internal/etcdtest"
)

// etcdListed returns the instances of service registered in etcd under the default prefix.
func etcdListed(t *testing.T, c *clientv3.Client, service string) ([]discovery.Instance, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, etcd.ServiceKey(etcd.DefaultPrefix, service), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var out []discovery.Instance
	for _, kv := range resp.Kvs {
		var i discovery.Instance
		if err := json.Unmarshal(kv.Value, &i); err != nil {
			return nil, err
		}
		out = append(out, i)
	}
	return out, nil
}

func etcdClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestEtcdRegistrationFollowsLifecycle runs against a real etcd: the instance is registered once
// ready, with the description a Consul registration has (address, port, tags, meta with the gRPC
// port), a client in another service finds it, and it is gone at the start of the drain, while the
// listener still serves.
func TestEtcdRegistrationFollowsLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	m := etcdtest.Start(t)
	etcdEnv := []string{"ETCD_ENDPOINTS", m.Endpoint(), "DISCOVERY", "etcd"}
	c := etcdClient(t, m.Endpoint())

	svc, err := chassis.New("inventory", chassis.WithEnv(env(append(etcdEnv, "DRAIN_DELAY", "1s", "SERVICE_TAGS", "v1,blue",
		"SERVICE_META", "zone:a")...)))
	if err != nil {
		t.Fatal(err)
	}
	if svc.Etcd() == nil || svc.Consul() != nil {
		t.Fatal("Etcd() is nil with DISCOVERY=etcd")
	}
	svc.HandleFunc("GET /stock", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "7") })
	svc.GRPC() // serves gRPC: the registration carries its port
	cancel, done := runReady(t, svc)

	insts, err := etcdListed(t, c, "inventory")
	if err != nil || len(insts) != 1 {
		t.Fatalf("registered instances: %+v, %v", insts, err)
	}
	e := insts[0]
	_, grpcPort, _ := strings.Cut(svc.GRPCAddr(), "127.0.0.1:")
	if e.Address != "127.0.0.1" || !strings.HasSuffix(svc.Addr(), ":"+strconv.Itoa(e.Port)) || strings.Join(e.Tags, ",") != "v1,blue" ||
		e.Meta["zone"] != "a" || e.Meta[chassis.MetaGRPCPort] != grpcPort || !strings.HasPrefix(e.ID, "inventory-") {
		t.Fatalf("registered %+v, service at %s, gRPC at %s", e, svc.Addr(), svc.GRPCAddr())
	}

	callStock(t, etcdEnv)
	if insts, _ := etcdListed(t, c, "shop"); len(insts) != 0 {
		t.Errorf("REGISTER=false registered %+v", insts)
	}
	drainDeregisters(t, svc, cancel, done, func() bool {
		insts, err := etcdListed(t, c, "inventory")
		return err == nil && len(insts) == 0
	})
}

// DISCOVERY=etcd without ETCD_ENDPOINTS, or with bad etcd values, is a configuration error that
// names the variables, before anything starts.
func TestEtcdSettingsAreChecked(t *testing.T) {
	_, err := chassis.New("inventory", chassis.WithEnv(env("DISCOVERY", "etcd", "ETCD_CONSISTENCY", "quorum", "ETCD_LEASE_TTL", "1s")))
	var cerr *config.Error
	if !errors.As(err, &cerr) {
		t.Fatalf("want a *config.Error, got %v", err)
	}
	for _, v := range []string{"ETCD_ENDPOINTS", "ETCD_CONSISTENCY", "ETCD_LEASE_TTL"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("the error does not name %s: %v", v, err)
		}
	}
	// New fails after the etcd client was built (TLS files that do not exist): the client is closed,
	// no goroutine is left behind (TestMain's goleak checks).
	if _, err := chassis.New("inventory", chassis.WithEnv(env("DISCOVERY", "etcd", "ETCD_ENDPOINTS", "127.0.0.1:1",
		"TLS_CERT_FILE", "/nonexistent.pem", "TLS_KEY_FILE", "/nonexistent.key"))); err == nil {
		t.Error("missing TLS files accepted")
	}
	// Without DISCOVERY=etcd, the etcd variables are not required.
	if _, err := chassis.New("inventory", chassis.WithEnv(env())); err != nil {
		t.Fatal(err)
	}
}

// etcdRegistry starts a single etcd member for the rolling tests, with a lease TTL of ttl.
func etcdRegistry(ttl time.Duration) func(*testing.T) rollingRegistry {
	return func(t *testing.T) rollingRegistry {
		m := etcdtest.Start(t)
		c := etcdClient(t, m.Endpoint())
		return rollingRegistry{
			name: "etcd",
			env:  []string{"DISCOVERY=etcd", "ETCD_ENDPOINTS=" + m.Endpoint(), "ETCD_LEASE_TTL=" + ttl.String()},
			idOf: func(port string) (string, error) {
				insts, err := etcdListed(t, c, "rolling")
				for _, i := range insts {
					if i.Meta[chassis.MetaGRPCPort] == port {
						return i.ID, nil
					}
				}
				return "", err
			},
			count: func() (int, error) { insts, err := etcdListed(t, c, "rolling"); return len(insts), err },
		}
	}
}

// TestEtcdGRPCRollingRestartLosesNoCall is TestGRPCRollingRestartLosesNoCall on etcd: three gRPC
// instances restarted one at a time, in place and with a surge, under steady load from a chassis
// gRPC client that finds them through an etcd watch: no call may fail, Put's included.
func TestEtcdGRPCRollingRestartLosesNoCall(t *testing.T) {
	rollingRestart(t, etcdRegistry(etcd.DefaultLeaseTTL))
}

// TestEtcdGRPCKilledInstanceLeavesRotation is TestGRPCKilledInstanceLeavesRotation on etcd: SIGKILL
// of one of three instances under load; no idempotent call fails, and the dead instance's lease
// (3 s here) expires, taking it out of etcd and the watchers, within the TTL (plus etcd's 500 ms
// expiry check and a poll).
func TestEtcdGRPCKilledInstanceLeavesRotation(t *testing.T) {
	const ttl = 3 * time.Second
	killedLeavesRotation(t, etcdRegistry(ttl), ttl+time.Second)
}
