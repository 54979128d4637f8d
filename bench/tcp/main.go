// Command tcp is the TCP throughput harness of issue 15: it builds one server binary per
// configuration (../cmd/hello-*, ../cmd/gateway-*, and the main module's cmd/ambassador; the
// haproxy configuration runs the haproxy on PATH and is skipped without one), starts each pinned to one core with taskset,
// loads it over loopback with wrk pinned to another core, and prints markdown tables of medians and
// of ratios to the baseline of the same round. Rounds are interleaved (round r runs every
// configuration once, in an order rotated by r) so that a noisy machine hits all alike.
//
//	cd bench && go run ./tcp                      # 5 rounds of 10 s, every configuration
//	cd bench && go run ./tcp -d 1s -warmup 1s -rounds 1 # smoke
//	cd bench && go run ./tcp -rounds 0 -profile /tmp/prof -strace -perf # where the time goes
//	cd bench && go run ./tcp -grpc                # the gRPC configurations, loaded by ghz
//	cd bench && go run ./tcp -grpc -d 1s -warmup 1s -rounds 1 # gRPC smoke
//	cd bench && go run ./tcp -grpc -gen h2load    # gRPC loaded by h2load (nghttp2-client)
//
// With -grpc the configurations are gRPC servers (../cmd/grpc-*) of
// grpc.testing.TestService/UnaryCall, loaded by ghz (go install github.com/bojand/ghz/cmd/ghz)
// pinned to the load CPU with -c workers over -grpc-conns connections; -configs then names gRPC
// configurations and no two-hop configuration runs. Readiness is their grpc.health.v1 SERVING.
//
// Each configuration is measured as: start; wait until GET /hello/ready answers 200; read VmRSS
// (idle); warm up; read utime+stime from /proc/<pid>/stat; run wrk -t1 -cN -dD --latency; read the
// CPU time and VmRSS again (loaded) and VmHWM (peak). CPU per request is the CPU time the server
// process used during the run divided by the requests wrk completed.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tcp:", err)
		os.Exit(1)
	}
}

type flags struct {
	duration, warmup time.Duration
	rounds           int
	conns, threads   int
	serverCPU        string
	loadCPU          string
	single, twoHop   string
	out              string
	profileDir       string
	strace, perf     bool
	keep             bool
	quiet            bool
	grpc             bool
	grpcConns        int
	gen              string
}

func run() error {
	var f flags
	flag.DurationVar(&f.duration, "d", 10*time.Second, "length of each measured wrk run")
	flag.DurationVar(&f.warmup, "warmup", 3*time.Second, "wrk run before each measurement, not counted")
	flag.IntVar(&f.rounds, "rounds", 5, "interleaved rounds; 0 runs only the -profile pass")
	flag.IntVar(&f.conns, "c", 32, "wrk connections")
	flag.IntVar(&f.threads, "t", 1, "wrk threads")
	flag.StringVar(&f.serverCPU, "server-cpu", "1", "taskset CPU list of the servers (gateway and backend share it)")
	flag.StringVar(&f.loadCPU, "load-cpu", "0", "taskset CPU list of wrk")
	flag.StringVar(&f.single, "configs", strings.Join(names(singleHop()), ","), "single-hop configurations to run, comma-separated; empty runs none")
	flag.StringVar(&f.twoHop, "twohop", strings.Join(names(twoHopTargets()), ","), "two-hop configurations to run, comma-separated; empty runs none")
	flag.StringVar(&f.out, "o", "", "also write the report to this file")
	flag.StringVar(&f.profileDir, "profile", "", "after the rounds, run each configuration once more with CPU and allocation profiles (pprof) and GC traces, written to this directory")
	flag.BoolVar(&f.strace, "strace", false, "with -profile: one more run per configuration under strace -c -f, for syscalls per request")
	flag.BoolVar(&f.perf, "perf", false, "with -profile: perf record -e cpu-clock -g during the profiled run (kernel and runtime time)")
	flag.BoolVar(&f.keep, "keep", false, "keep the work directory (binaries and server logs)")
	flag.BoolVar(&f.quiet, "q", false, "no progress lines on standard error")
	flag.BoolVar(&f.grpc, "grpc", false, "run the gRPC configurations ("+strings.Join(names(grpcTargets()), ", ")+") with ghz instead of the HTTP ones")
	flag.IntVar(&f.grpcConns, "grpc-conns", 4, "with -grpc: connections ghz spreads its -c workers over")
	flag.StringVar(&f.gen, "gen", "ghz", "with -grpc: the load generator, ghz or h2load (lighter: ghz saturates its core first on 2 cores)")
	flag.Parse()
	if f.gen != "ghz" && f.gen != "h2load" {
		return fmt.Errorf("-gen %q: ghz or h2load", f.gen)
	}
	if f.grpc {
		configsSet := false
		flag.Visit(func(fl *flag.Flag) { configsSet = configsSet || fl.Name == "configs" })
		if !configsSet {
			f.single = strings.Join(names(grpcTargets()), ",")
		}
		f.twoHop = ""
	}
	if f.rounds == 0 && f.profileDir == "" {
		return fmt.Errorf("-rounds 0 needs -profile")
	}
	if (f.strace || f.perf) && f.profileDir == "" {
		return fmt.Errorf("-strace and -perf need -profile DIR")
	}
	oneHop := singleHop()
	if f.grpc {
		oneHop = grpcTargets()
	}
	single, err := pick(oneHop, f.single)
	if err != nil {
		return err
	}
	two, err := pick(twoHopTargets(), f.twoHop)
	if err != nil {
		return err
	}
	two = installed(two)
	if len(single)+len(two) == 0 {
		return fmt.Errorf("no configuration selected")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	h, err := newHarness(ctx, f)
	if err != nil {
		return err
	}
	defer h.close()
	return h.run(ctx, single, two)
}

// installed drops the configurations whose program is not on PATH (haproxy), saying so.
func installed(ts []target) []target {
	var out []target
	for _, t := range ts {
		if t.front.onPath {
			if _, err := exec.LookPath(t.front.bin); err != nil {
				fmt.Fprintf(os.Stderr, "tcp: skipping %s: %s is not on PATH (apt-get install -y %s)\n", t.name, t.front.bin, t.front.bin)
				continue
			}
		}
		out = append(out, t)
	}
	return out
}

func names(ts []target) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.name
	}
	return out
}

// pick returns the targets named in list, in the order of all.
func pick(all []target, list string) ([]target, error) {
	want := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		if n = strings.TrimSpace(n); n != "" {
			want[n] = true
		}
	}
	var out []target
	for _, t := range all {
		if want[t.name] {
			out = append(out, t)
			delete(want, t.name)
		}
	}
	for n := range want {
		return nil, fmt.Errorf("unknown configuration %q (known: %s)", n, strings.Join(names(all), ", "))
	}
	return out, nil
}
