package etcdsync_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/coordination/dynconfig"
	"github.com/cloudchassis/kit/coordination/election"
	"github.com/cloudchassis/kit/coordination/etcdsync"
	"github.com/cloudchassis/kit/coordination/lock"
	"github.com/cloudchassis/kit/internal/etcdtest"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// An election on etcd through election.NewWith: the first candidate leads, an observer follows the
// leader, and Stop hands over at once to the second candidate with a higher token.
func TestElectionHandOver(t *testing.T) {
	m := etcdtest.Start(t)
	cli := newClient(t, m.Endpoint())
	const key = "/elections/catalog"
	elected := make(chan string, 4)
	candidate := func(id string) *election.Election {
		l, err := etcdsync.New(cli, key, etcdsync.WithTTL(itTTL), etcdsync.WithMargin(itMargin), etcdsync.WithValue([]byte(id)))
		if err != nil {
			t.Fatal(err)
		}
		e, err := election.NewWith(l, etcdsync.NewSource(cli, key),
			election.WithOnElected(func(ctx context.Context, _ lock.Token) { elected <- id; <-ctx.Done() }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.Stop(context.Background()) })
		return e
	}
	a, b := candidate("a"), candidate("b")
	obs := etcdsync.NewSource(cli, key)
	o := election.NewSourceObserver(obs)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if ld, err := o.Next(ctx); err != nil || ld.Exists() {
		t.Fatalf("before any campaign: %+v, %v; want nobody", ld, err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if id := <-elected; id != "a" {
		t.Fatalf("%s elected first, want a", id)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	la, err := o.Next(ctx)
	if err != nil || la.Value != "a" {
		t.Fatalf("observer: %+v, %v; want a", la, err)
	}
	if tok, ok := a.IsLeader(); !ok || tok != la.Token {
		t.Fatalf("a.IsLeader() = %v, %v; want true with the observed token %d", tok, ok, la.Token)
	}
	stopped := time.Now()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if id := <-elected; id != "b" {
		t.Fatalf("%s elected after a stopped, want b", id)
	}
	t.Logf("hand-over took %v", time.Since(stopped))
	lb, err := o.Next(ctx)
	if err != nil || lb.Value != "b" || lb.Token <= la.Token {
		t.Fatalf("observer after the hand-over: %+v, %v; want b with a token above %d", lb, err, la.Token)
	}
	if cur, err := b.Leader(ctx); err != nil || cur != lb {
		t.Fatalf("Leader() = %+v, %v; want %+v", cur, err, lb)
	}
	if err := b.Resign(ctx); err != nil {
		t.Fatalf("resign: %v", err)
	}
	if err := a.Resign(ctx); !errors.Is(err, election.ErrNotLeader) {
		t.Fatalf("resign of a stopped candidate: %v, want ErrNotLeader", err)
	}
}

// The Lock reports coordination/lock's metrics.
func TestLockMetrics(t *testing.T) {
	m := etcdtest.Start(t)
	cli := newClient(t, m.Endpoint())
	reader := metric.NewManualReader()
	l := newLock(t, cli, "/locks/metrics", etcdsync.WithMeterProvider(metric.NewMeterProvider(metric.WithReader(reader))))
	acquire(t, l, 5*time.Second)
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, mm := range sm.Metrics {
			got[mm.Name] = true
		}
	}
	for _, name := range []string{semconv.MetricLockAcquisitions, semconv.MetricLockAcquireDuration, semconv.MetricLockHeld} {
		if !got[name] {
			t.Errorf("metric %s missing; have %v", name, got)
		}
	}
}

// dynconfig over etcd keys: a valid change is applied without a restart, an invalid one rejected
// with the previous value kept, and a key naming a variable that is not reloadable is reported,
// never applied.
func TestDynconfigFromEtcd(t *testing.T) {
	m := etcdtest.Start(t)
	cli := newClient(t, m.Endpoint())
	type settings struct {
		Port      int     `envconfig:"PORT" default:"8080"`
		RateLimit float64 `envconfig:"RATE_LIMIT" default:"100" validate:"gt=0" reload:"true"`
	}
	cfg, err := dynconfig.New[settings](etcdsync.NewKV(cli), "config/orders",
		dynconfig.WithLookup(config.MapLookup(map[string]string{"RATE_LIMIT": "50"})))
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan []string, 4)
	defer cfg.Subscribe(func(c dynconfig.Change[settings]) { changes <- c.Changed })()
	ctx := context.Background()
	if err := cfg.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer cfg.Stop(ctx)
	if got := cfg.Load().RateLimit; got != 50 {
		t.Fatalf("rate limit %v before any key, want the environment's 50", got)
	}
	put := func(k, v string) {
		t.Helper()
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	put("config/orders/RATE_LIMIT", "200")
	select {
	case changed := <-changes:
		if strings.Join(changed, ",") != "RATE_LIMIT" || cfg.Load().RateLimit != 200 {
			t.Fatalf("changed %v, rate limit %v; want RATE_LIMIT and 200", changed, cfg.Load().RateLimit)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the change did not arrive")
	}
	index := cfg.Snapshot().Index

	put("config/orders/RATE_LIMIT", "-5")
	var rejected *dynconfig.RejectedError
	waitFor(t, func() bool { return errors.As(cfg.Err(), &rejected) }, "the invalid value was not rejected")
	if cfg.Load().RateLimit != 200 || rejected.Kept != index || rejected.Index <= index {
		t.Fatalf("after an invalid value: rate limit %v, rejection %+v; want 200 kept (index %d)", cfg.Load().RateLimit, rejected, index)
	}

	put("config/orders/PORT", "9090")
	put("config/orders/RATE_LIMIT", "300")
	waitFor(t, func() bool { return cfg.Load().RateLimit == 300 && cfg.Err() == nil }, "the fixed value was not applied")
	snap := cfg.Snapshot()
	if snap.Value.Port != 8080 || len(snap.Notices) != 1 || !strings.Contains(snap.Notices[0], "PORT") {
		t.Fatalf("port %d, notices %q; want 8080 kept and a notice about PORT", snap.Value.Port, snap.Notices)
	}
	if _, err := cli.Delete(ctx, "config/orders/RATE_LIMIT"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return cfg.Load().RateLimit == 50 }, "a deleted key did not fall back to the environment")
}

func waitFor(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// KV.List with a WaitIndex blocks like a Consul blocking query: changes elsewhere do not wake it,
// the wait time returns the same index, a change under the prefix returns at once with a higher one.
func TestKVBlockingQuery(t *testing.T) {
	m := etcdtest.Start(t)
	cli := newClient(t, m.Endpoint())
	ctx := context.Background()
	kv := etcdsync.NewKV(cli)
	if _, err := cli.Put(ctx, "app/a/X", "1"); err != nil {
		t.Fatal(err)
	}
	pairs, meta, err := kv.List(ctx, "app/a/", nil)
	if err != nil || len(pairs) != 1 || string(pairs[0].Value) != "1" {
		t.Fatalf("list: %v, %v", pairs, err)
	}
	if _, err := cli.Put(ctx, "app/b/X", "elsewhere"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	pairs, meta2, err := kv.List(ctx, "app/a/", &api.QueryOptions{WaitIndex: meta.LastIndex, WaitTime: 300 * time.Millisecond})
	if err != nil || meta2.LastIndex != meta.LastIndex || time.Since(start) < 300*time.Millisecond || len(pairs) != 1 {
		t.Fatalf("unchanged prefix: index %d -> %d after %v, %v, %v; want the same index after the wait time",
			meta.LastIndex, meta2.LastIndex, time.Since(start), pairs, err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, _ = cli.Put(ctx, "app/a/Y", "2")
	}()
	start = time.Now()
	pairs, meta3, err := kv.List(ctx, "app/a/", &api.QueryOptions{WaitIndex: meta2.LastIndex, WaitTime: time.Minute})
	if err != nil || meta3.LastIndex <= meta2.LastIndex || len(pairs) != 2 || time.Since(start) > 5*time.Second {
		t.Fatalf("changed prefix: index %d -> %d after %v, %v, %v", meta2.LastIndex, meta3.LastIndex, time.Since(start), pairs, err)
	}
}
