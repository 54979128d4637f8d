package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

const wrkOut = `Running 10s test @ http://127.0.0.1:8080/hello/world
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.31ms  412.50us  12.04ms   91.11%
    Req/Sec    24.51k     1.20k   26.03k    80.00%
  Latency Distribution
     50%    1.25ms
     75%    1.41ms
     90%    1.63ms
     99%  812.00us
  243912 requests in 10.00s, 36.29MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  24391.20
Transfer/sec:      3.63MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkOut)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{requests: 243912, elapsed: 10 * time.Second, rps: 24391.20,
		p50: 1250 * time.Microsecond, p99: 812 * time.Microsecond, errors: 10,
		okRPS: float64(243912-10) / 10}
	if r != want {
		t.Fatalf("parseWrk:\n got %+v\nwant %+v", r, want)
	}
	if _, err := parseWrk("Running 1s test\n"); err == nil {
		t.Fatal("parseWrk accepted output without results")
	}
}

func TestParseWrkDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"812.00us": 812 * time.Microsecond, "1.25ms": 1250 * time.Microsecond,
		"2.01s": 2010 * time.Millisecond, "1.50m": 90 * time.Second,
	} {
		got, err := parseWrkDuration(in)
		if err != nil || got != want {
			t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseWrkDuration("3.0x"); err == nil {
		t.Error("parseWrkDuration accepted an unknown unit")
	}
}

func TestParseStrace(t *testing.T) {
	out := []byte(`% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 40.00    0.400000           4    100000           write
 30.00    0.300000           3    100000     50000 read
 20.00    0.200000          10     20000           epoll_pwait
 10.00    0.100000          10     10000           futex
------ ----------- ----------- --------- --------- ----------------
100.00    1.000000           4    230000     50000 total
`)
	total, rows := parseStrace(out)
	if total != 230000 {
		t.Fatalf("total = %d, want 230000", total)
	}
	if len(rows) != 4 || rows[0].calls != 100000 || rows[2].name != "epoll_pwait" || rows[3].name != "futex" {
		t.Fatalf("rows = %+v", rows)
	}
}

func TestProcOfSelf(t *testing.T) {
	cpu, err := cpuTime(os.Getpid())
	if err != nil || cpu < 0 {
		t.Fatalf("cpuTime = %v, %v", cpu, err)
	}
	rss, hwm, err := memory(os.Getpid())
	if err != nil || rss <= 0 || hwm < rss {
		t.Fatalf("memory = %d, %d, %v", rss, hwm, err)
	}
}

func TestMedianAndRatio(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Fatalf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Fatalf("median even = %v", m)
	}
	r := &report{samples: map[string][]sample{}}
	mk := func(ok float64) sample { return sample{wrk: wrkResult{okRPS: ok}} }
	// The ratio is taken within each round, then the median: a slow round affects both alike.
	r.add(0, "bare", mk(100))
	r.add(0, "x", mk(50))
	r.add(1, "bare", mk(10))
	r.add(1, "x", mk(6))
	r.add(2, "bare", mk(200))
	r.add(2, "x", mk(80))
	if got := r.ratio("x", "bare", rps); got != 0.5 {
		t.Fatalf("ratio = %v, want 0.5 (median of 0.5, 0.6, 0.4)", got)
	}
}

func TestProfileTotal(t *testing.T) {
	for in, want := range map[string]float64{
		"Showing nodes accounting for 937732, 100% of 937743 total":        937743,
		"Showing nodes accounting for 110.46MB, 98.22% of 112.5MB total":   112.5 * (1 << 20),
		"Showing nodes accounting for 44664.61kB, 100% of 44664.5kB total": 44664.5 * (1 << 10),
	} {
		if got, ok := profileTotal(in); !ok || got != want {
			t.Errorf("profileTotal(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	if _, ok := profileTotal("no total here"); ok {
		t.Error("profileTotal found a total in a line without one")
	}
}

func TestPerfDSO(t *testing.T) {
	in := []byte("# Samples: 1K of event 'cpu-clock'\n#\n    57.55%  [kernel.kallsyms]\n    41.25%  hello-chassis\n     1.20%  [vdso]\n")
	if got, want := perfDSO(in), "kernel 57.55%, hello-chassis 41.25%, vdso 1.20%"; got != want {
		t.Fatalf("perfDSO = %q, want %q", got, want)
	}
}

// ghzOut is the shape of `ghz -O json` (v0.93.0), trimmed of fields the harness does not read.
const ghzOut = `{"date":"2026-12-03T18:31:50Z","options":{"call":"grpc.testing.TestService.UnaryCall"},
"count":20000,"total":2000000000,"average":1500000,"fastest":200000,"slowest":90000000,"rps":10000.5,
"histogram":[{"mark":0.0002,"count":1,"frequency":0}],
"latencyDistribution":[{"percentage":10,"latency":800000},{"percentage":50,"latency":1400000},
{"percentage":99,"latency":9000000}],
"statusCodeDistribution":{"OK":19990,"Unavailable":10},
"errorDistribution":{"rpc error: code = Unavailable desc = transport is closing":10},"details":null}`

func TestParseGhz(t *testing.T) {
	r, err := parseGhz([]byte(ghzOut))
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{requests: 20000, elapsed: 2 * time.Second, rps: 10000.5, okRPS: 19990.0 / 2,
		p50: 1400 * time.Microsecond, p99: 9 * time.Millisecond, errors: 10}
	if r != want {
		t.Fatalf("parseGhz:\n got %+v\nwant %+v", r, want)
	}
	for _, bad := range []string{`{"count":0,"total":0}`, `{"count":5,"total":10,"statusCodeDistribution":{"OK":5}}`, `not json`} {
		if _, err := parseGhz([]byte(bad)); err == nil {
			t.Errorf("parseGhz accepted %s", bad)
		}
	}
}

func TestProtosetHasTheMethod(t *testing.T) {
	path := t.TempDir() + "/test.protoset"
	if err := writeProtoset(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(b, &set); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&set) // fails if an import is missing
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName(protoreflect.FullName(ghzCall[:strings.LastIndexByte(ghzCall, '.')]))
	if err != nil {
		t.Fatal(err)
	}
	if d.(protoreflect.ServiceDescriptor).Methods().ByName("UnaryCall") == nil {
		t.Fatalf("%s has no UnaryCall", d.FullName())
	}
}

const h2loadOut = `starting benchmark...
finished in 3.00s, 30513.33 req/s, 1.54MB/s
requests: 91540 total, 91572 started, 91540 done, 91538 succeeded, 2 failed, 0 errored, 0 timeout
status codes: 91538 2xx, 0 3xx, 0 4xx, 2 5xx
traffic: 4.62MB (4844211) total, 1.21MB (1268862) headers (space savings 93.38%), 1.40MB (1464640) data
                     min         max         mean         sd        +/- sd
time for request:       92us    168.25ms       978us      4.99ms    99.69%
time for connect:      167us       325us       247us        79us    50.00%
`

func TestParseH2load(t *testing.T) {
	r, err := parseH2load(h2loadOut)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{requests: 91540, elapsed: 3 * time.Second, rps: 30513.33, okRPS: 91538.0 / 3,
		p50: 978 * time.Microsecond, p99: 168250 * time.Microsecond, errors: 2}
	if r != want {
		t.Fatalf("parseH2load:\n got %+v\nwant %+v", r, want)
	}
	if _, err := parseH2load("starting benchmark...\n"); err == nil {
		t.Fatal("parseH2load accepted output without a summary")
	}
}
