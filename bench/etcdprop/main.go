// Command etcdprop measures discovery on a real etcd member (issue 18): for each size N it starts a
// fresh single-member etcd on loopback (internal/etcdtest), writes N instances of one service under
// one lease in discovery/etcd's key layout, and follows the service two ways in the same process:
//
//   - chassis: a discovery/etcd Registry and Watcher (list, then a prefix watch; immutable
//     snapshots);
//   - bare: a clientv3 prefix watch loop that only notes when each key's event arrives, the least
//     any watcher on etcd can do.
//
// It then deregisters one instance (deletes its key) and registers it again, -updates times, and
// times each change from the write's return until each side has it. It prints, per N, the first
// list's time and the watcher's heap per instance, and the p50/p99/max of both sides' propagation
// with the ratio chassis/bare. Run from bench/ (BENCHMARKS.md quotes its output):
//
//	GOTOOLCHAIN=auto go run ./etcdprop -n 100,1000,5000
//
// It needs the etcd binary (scripts/install-etcd.sh).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/etcd"
	"github.com/cloudchassis/kit/internal/consultest"
	"github.com/cloudchassis/kit/internal/etcdtest"
)

const (
	service = "propsvc"
	prefix  = "/chassis"
)

func main() {
	sizes := flag.String("n", "100,1000,5000", "comma-separated numbers of instances")
	updates := flag.Int("updates", 50, "deregistrations (each followed by a re-registration) measured per size")
	out := flag.String("o", "", "also write the Markdown table to this file")
	flag.Parse()
	var ns []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "etcdprop: bad -n %q\n", s)
			os.Exit(2)
		}
		ns = append(ns, n)
	}
	var rows []result
	err := consultest.Run(func(t consultest.TB) {
		for _, n := range ns {
			rows = append(rows, measure(t, n, *updates))
			fmt.Fprintf(os.Stderr, "etcdprop: %d instances done\n", n)
		}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdprop:", err)
		os.Exit(1)
	}
	var b strings.Builder
	writeTable(&b, rows, *updates)
	fmt.Print(b.String())
	if *out != "" {
		if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "etcdprop:", err)
			os.Exit(1)
		}
	}
}

type result struct {
	n           int
	firstList   time.Duration // Watch to the first snapshot with every instance
	heapPerInst float64       // the watcher's heap per watched instance, bytes
	chassis     []time.Duration
	bare        []time.Duration
}

func measure(t consultest.TB, n, updates int) result {
	m := etcdtest.Start(t)
	defer m.Kill()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.Endpoint()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer cli.Close()
	lease, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatalf("lease: %v", err)
	}
	put := func(i int) error {
		id := instanceID(i)
		v, _ := json.Marshal(map[string]any{"id": id, "address": "127.0.0.1", "port": 10000 + i})
		_, err := cli.Put(ctx, etcd.InstanceKey(prefix, service, id), string(v), clientv3.WithLease(lease.ID))
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				if err := put(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatalf("register: %v", err)
	}

	r := result{n: n}
	// chassis watcher: its own client, so that its connection and the bare loop's do not share a
	// stream.
	wcli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.Endpoint()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer wcli.Close()
	heap0 := heapAlloc()
	reg, err := etcd.NewRegistry(wcli, etcd.WithPrefix(prefix))
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	defer reg.Close()
	start := time.Now()
	w, err := reg.Watch(service)
	if err != nil {
		t.Fatalf("watch: %v", err)
	}
	defer w.Close()
	var ver uint64
	for {
		s, err := w.Next(ctx, ver)
		if err != nil {
			t.Fatalf("first list: %v", err)
		}
		ver = s.Version
		if len(s.Instances) == n {
			break
		}
	}
	r.firstList = time.Since(start)
	r.heapPerInst = float64(heapAlloc()-heap0) / float64(n)

	// bare loop: note when each key's event arrives.
	bcli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.Endpoint()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	defer bcli.Close()
	type arrival struct {
		key string
		del bool
		at  time.Time
	}
	arrivals := make(chan arrival, 1024)
	bctx, bcancel := context.WithCancel(ctx)
	var bwg sync.WaitGroup
	wch := bcli.Watch(clientv3.WithRequireLeader(bctx), etcd.ServiceKey(prefix, service), clientv3.WithPrefix())
	bwg.Go(func() {
		for resp := range wch {
			now := time.Now()
			for _, ev := range resp.Events {
				select {
				case arrivals <- arrival{string(ev.Kv.Key), ev.Type == clientv3.EventTypeDelete, now}:
				case <-bctx.Done():
					return
				}
			}
		}
	})
	defer func() { bcancel(); bwg.Wait() }()
	time.Sleep(200 * time.Millisecond) // the bare watch is established

	for k := range updates {
		i := (k*7919 + 13) % n
		id, key := instanceID(i), etcd.InstanceKey(prefix, service, instanceID(i))
		for _, del := range []bool{true, false} {
			time.Sleep(50 * time.Millisecond)
			t0 := time.Now()
			if del {
				_, err = cli.Delete(ctx, key)
			} else {
				err = put(i)
			}
			if err != nil {
				t.Fatalf("update: %v", err)
			}
			// chassis side
			for {
				s, err := w.Next(ctx, ver)
				if err != nil {
					t.Fatalf("watcher: %v", err)
				}
				ver = s.Version
				if has(s, id) != del {
					break
				}
			}
			if del {
				r.chassis = append(r.chassis, time.Since(t0))
			}
			// bare side (its event is usually already waiting)
			for a := range arrivals {
				if a.key == key && a.del == del {
					if del {
						r.bare = append(r.bare, a.at.Sub(t0))
					}
					break
				}
			}
		}
	}
	return r
}

func instanceID(i int) string { return fmt.Sprintf("%s-%05d", service, i) }

func has(s discovery.Snapshot, id string) bool {
	return slices.ContainsFunc(s.Instances, func(in discovery.Instance) bool { return in.ID == id })
}

func heapAlloc() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

func pct(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func writeTable(w io.Writer, rows []result, updates int) {
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 2, 64) }
	fmt.Fprintf(w, "One etcd member on loopback; %d deregistrations per size, each timed from the delete's return until the watcher has it.\n\n", updates)
	fmt.Fprintln(w, "| instances | first list | watcher heap per instance | chassis p50 / p99 / max | bare clientv3 p50 / p99 / max | p50 ratio | p99 ratio |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		cp50, cp99 := pct(r.chassis, 0.5), pct(r.chassis, 0.99)
		bp50, bp99 := pct(r.bare, 0.5), pct(r.bare, 0.99)
		fmt.Fprintf(w, "| %d | %s ms | %.0f B | %s / %s / %s ms | %s / %s / %s ms | %.2f× | %.2f× |\n",
			r.n, ms(r.firstList), r.heapPerInst,
			ms(cp50), ms(cp99), ms(slices.Max(r.chassis)),
			ms(bp50), ms(bp99), ms(slices.Max(r.bare)),
			float64(cp50)/float64(max(bp50, 1)), float64(cp99)/float64(max(bp99, 1)))
	}
}
