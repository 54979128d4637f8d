package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// harness owns the work directory (binaries, logs), the OTLP receiver and the report.
type harness struct {
	f     flags
	work  string
	otlp  *receiver
	began time.Time
	load0 string
	// gRPC configurations (-grpc): the ghz binary and the protoset it reads.
	ghzBin, protoset, ghzVersion string
	grpcBody                     string // the gRPC frame h2load sends
}

func newHarness(ctx context.Context, f flags) (*harness, error) {
	tools := []string{"taskset", "wrk"}
	if f.grpc {
		tools = tools[:1]
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found: run scripts/install-wrk.sh (make bench-tcp does)", tool)
		}
	}
	if f.strace {
		if _, err := exec.LookPath("strace"); err != nil {
			return nil, fmt.Errorf("strace not found: scripts/install-wrk.sh -with-profilers")
		}
	}
	if f.perf {
		if _, err := exec.LookPath("perf"); err != nil {
			return nil, fmt.Errorf("perf not found: scripts/install-wrk.sh -with-profilers")
		}
	}
	work, err := os.MkdirTemp("", "bench-tcp-")
	if err != nil {
		return nil, err
	}
	h := &harness{f: f, work: work, began: time.Now(), load0: loadavg()}
	if f.grpc && f.gen == "h2load" {
		h.grpcBody = filepath.Join(work, "request.grpc")
		if _, err = exec.LookPath("h2load"); err != nil {
			err = fmt.Errorf("h2load not found: apt-get install nghttp2-client")
		} else {
			err = writeGRPCBody(h.grpcBody)
		}
		if err != nil {
			h.close()
			return nil, err
		}
	} else if f.grpc {
		h.protoset = filepath.Join(work, "test.protoset")
		if h.ghzBin, err = ghzPath(); err == nil {
			err = writeProtoset(h.protoset)
			h.ghzVersion = moduleVersion(h.ghzBin)
		}
		if err != nil {
			h.close()
			return nil, err
		}
	}
	if err := h.build(ctx); err != nil {
		h.close()
		return nil, err
	}
	if h.otlp, err = startReceiver(); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

func (h *harness) close() {
	if h.otlp != nil {
		h.otlp.close()
	}
	if h.f.keep {
		h.logf("work directory kept: %s", h.work)
		return
	}
	_ = os.RemoveAll(h.work)
}

// build compiles every server binary once, into the work directory.
func (h *harness) build(ctx context.Context) error {
	h.logf("building servers into %s", h.work)
	// The ambassador is the library's own command: built from the main module (replace ../).
	cmd := exec.CommandContext(ctx, "go", "build", "-o", h.work+string(filepath.Separator), "./cmd/...", "github.com/cloudchassis/kit/cmd/ambassador")
	cmd.Dir = moduleDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/... and the ambassador: %w\n%s", err, out)
	}
	return nil
}

// moduleDir is the bench module's directory: the working directory when it holds go.mod and cmd/
// (cd bench && go run ./tcp), else its parent (cd bench/tcp).
func moduleDir() string {
	wd, _ := os.Getwd()
	if _, err := os.Stat(filepath.Join(wd, "cmd")); err == nil {
		return wd
	}
	return filepath.Dir(wd)
}

func (h *harness) logf(format string, args ...any) {
	if !h.f.quiet {
		fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
}

// sample is one measurement of one configuration.
type sample struct {
	wrk                 wrkResult
	cpu, backendCPU     time.Duration // during the measured run
	idleRSS, loadedRSS  int64
	peakRSS             int64
	backendConns        int64 // new TCP connections the backend accepted during the measured run
	loadBefore, loadEnd string
}

func (s sample) cpuPerReq() float64 { return perReq(s.cpu, s.wrk.requests) }

// serverBusy and genBusy are the share of one core the server processes (front and backend) and
// the load generator used during the measured run.
func (s sample) serverBusy() float64 { return busy(s.cpu+s.backendCPU, s.wrk.elapsed) }
func (s sample) genBusy() float64    { return busy(s.wrk.genCPU, s.wrk.elapsed) }

func busy(cpu, elapsed time.Duration) float64 {
	if elapsed <= 0 {
		return 0
	}
	return cpu.Seconds() / elapsed.Seconds()
}
func (s sample) backendCPUPerReq() float64 {
	return perReq(s.backendCPU, s.wrk.requests)
}

func perReq(d time.Duration, n int64) float64 {
	if n == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(n)
}

// running is a started configuration.
type running struct {
	front, back *proc
}

func (r running) stop() {
	if r.front != nil {
		r.front.stop()
	}
	if r.back != nil {
		r.back.stop()
	}
}

// launch starts t (the backend first for two-hop configurations) and waits until it serves.
func (h *harness) launch(ctx context.Context, t target, extraEnv []string) (running, error) {
	var r running
	a, err := h.addrs()
	if err != nil {
		return r, err
	}
	if t.backend != nil {
		ba, err := h.addrs()
		if err != nil {
			return r, err
		}
		if r.back, err = h.start(ctx, t.name+"-backend", *t.backend, ba, extraEnv); err != nil {
			return r, err
		}
		a.backend = ba.public
	}
	if r.front, err = h.start(ctx, t.name, t.front, a, extraEnv); err != nil {
		r.stop()
		return r, err
	}
	return r, nil
}

func (h *harness) addrs() (addrs, error) {
	pub, err1 := freeAddr()
	adm, err2 := freeAddr()
	return addrs{public: pub, admin: adm, otlp: h.otlp.url}, errors.Join(err1, err2)
}

// load runs the load generator against the configuration for d: wrk on GET /hello/world, or
// ghz on the gRPC method for a gRPC configuration.
func (h *harness) load(ctx context.Context, r running, d time.Duration) (wrkResult, error) {
	if r.front.grpc && h.f.gen == "h2load" {
		return h.h2load(ctx, r.front.addr.public, d)
	}
	if r.front.grpc {
		return h.ghz(ctx, r.front.addr.public, d)
	}
	return h.wrk(ctx, "http://"+r.front.addr.public+r.front.prefix+"/hello/world", d)
}

// warmUp loads r for the warm-up time, if there is one.
func (h *harness) warmUp(ctx context.Context, t target, r running) error {
	if h.f.warmup <= 0 {
		return nil
	}
	if _, err := h.load(ctx, r, h.f.warmup); err != nil {
		return fmt.Errorf("%s warm-up: %w", t.name, err)
	}
	return nil
}

// measure runs one configuration once: start, idle RSS, warm-up, measured run, stop.
func (h *harness) measure(ctx context.Context, t target) (sample, error) {
	var s sample
	r, err := h.launch(ctx, t, nil)
	if err != nil {
		return s, err
	}
	defer r.stop()
	if s.idleRSS, _, err = memory(r.front.pid()); err != nil {
		return s, err
	}
	if err := h.warmUp(ctx, t, r); err != nil {
		return s, err
	}
	conns0, err := h.backendConns(ctx, r)
	if err != nil {
		return s, err
	}
	s.loadBefore = loadavg()
	c0, err1 := cpuTime(r.front.pid())
	b0, err2 := h.backendCPU(r)
	if err := errors.Join(err1, err2); err != nil {
		return s, err
	}
	if s.wrk, err = h.load(ctx, r, h.f.duration); err != nil {
		return s, fmt.Errorf("%s: %w", t.name, err)
	}
	c1, err1 := cpuTime(r.front.pid())
	b1, err2 := h.backendCPU(r)
	if err := errors.Join(err1, err2); err != nil {
		return s, err
	}
	s.cpu, s.backendCPU = c1-c0, b1-b0
	s.loadEnd = loadavg()
	if s.loadedRSS, s.peakRSS, err = memory(r.front.pid()); err != nil {
		return s, err
	}
	conns1, err := h.backendConns(ctx, r)
	if err != nil {
		return s, err
	}
	s.backendConns = conns1 - conns0
	return s, nil
}

func (h *harness) backendCPU(r running) (time.Duration, error) {
	if r.back == nil {
		return 0, nil
	}
	return cpuTime(r.back.pid())
}

// backendConns reads the backend's count of accepted connections (0 without a backend).
func (h *harness) backendConns(ctx context.Context, r running) (int64, error) {
	if r.back == nil {
		return 0, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.back.addr.public+"/debug/conns", nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return 0, fmt.Errorf("backend conns: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	// This request itself is one new connection of the backend: subtract it.
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n - 1, err
}

// run interleaves the rounds, prints the report, then runs the profile pass if asked.
func (h *harness) run(ctx context.Context, single, two []target) error {
	rep := &report{f: h.f, started: h.began, load0: h.load0, single: single, two: two, ghzVersion: h.ghzVersion,
		samples: map[string][]sample{}}
	all := append(append([]target{}, single...), two...)
	for round := 0; round < h.f.rounds; round++ {
		for i := range all {
			t := all[(i+round)%len(all)] // rotated order: each configuration leads one round
			h.logf("round %d/%d: %s", round+1, h.f.rounds, t.name)
			s, err := h.measure(ctx, t)
			if err != nil {
				return err
			}
			h.logf("  %.0f ok req/s, p50 %v, p99 %v, %.1f µs CPU/req, server core %.0f%% busy, generator %.0f%%, load %s",
				s.wrk.okRPS, s.wrk.p50, s.wrk.p99, s.cpuPerReq(), 100*s.serverBusy(), 100*s.genBusy(), s.loadEnd)
			rep.add(round, t.name, s)
		}
	}
	if h.f.rounds > 0 {
		rep.load1 = loadavg()
		rep.otlpRequests, rep.otlpBytes = h.otlp.requests.Load(), h.otlp.bytes.Load()
		text := rep.markdown()
		fmt.Print(text)
		if h.f.out != "" {
			if err := os.WriteFile(h.f.out, []byte(text), 0o644); err != nil {
				return err
			}
		}
	}
	if h.f.profileDir != "" {
		return h.profile(ctx, all)
	}
	return nil
}

// loadavg is the first three fields of /proc/loadavg: every figure is labelled with it.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// receiver is a discarding OTLP/HTTP receiver: it accepts POSTs on /v1/traces, /v1/metrics and
// /v1/logs and answers 200 with an empty protobuf body (an empty Export*ServiceResponse), which is
// what a collector answers when it accepted everything.
type receiver struct {
	srv      *http.Server
	url      string
	requests atomic.Int64
	bytes    atomic.Int64
	done     chan struct{}
}

func startReceiver() (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &receiver{url: "http://" + ln.Addr().String(), done: make(chan struct{})}
	mux := http.NewServeMux()
	for _, p := range []string{"/v1/traces", "/v1/metrics", "/v1/logs"} {
		mux.HandleFunc("POST "+p, func(w http.ResponseWriter, req *http.Request) {
			n, _ := io.Copy(io.Discard, req.Body)
			r.requests.Add(1)
			r.bytes.Add(n)
			w.Header().Set("Content-Type", "application/x-protobuf")
			w.WriteHeader(http.StatusOK)
		})
	}
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(r.done)
		_ = r.srv.Serve(ln)
	}()
	return r, nil
}

func (r *receiver) close() {
	_ = r.srv.Close()
	<-r.done
}

func numCPU() int { return runtime.NumCPU() }
