package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// profile runs each configuration once more with profiles: CPU and allocations (pprof deltas over
// the measured run), the Go GC trace, optionally perf (kernel time included) and, in a separate
// run because it slows the process down, strace -c for syscalls per request. Files go to
// h.f.profileDir; summary.md there collects the figures.
func (h *harness) profile(ctx context.Context, ts []target) error {
	dir := h.f.profileDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var sum strings.Builder
	fmt.Fprintf(&sum, "# Profiles of %s\n\nwrk -t%d -c%d -d%s on CPU %s, servers on CPU %s. Load average at the start: %s.\n\n",
		time.Now().Format("2006-01-02 15:04 MST"), h.f.threads, h.f.conns, wrkDuration(h.f.duration), h.f.loadCPU, h.f.serverCPU, loadavg())
	for _, t := range ts {
		if t.front.pprof == "" {
			h.logf("profile: skipping %s: no pprof endpoint (not a Go server)", t.name)
			continue
		}
		h.logf("profile: %s", t.name)
		line, err := h.profileOne(ctx, t, dir)
		if err != nil {
			return fmt.Errorf("profile %s: %w", t.name, err)
		}
		sum.WriteString(line)
		if h.f.strace {
			h.logf("strace: %s", t.name)
			line, err := h.straceOne(ctx, t, dir)
			if err != nil {
				return fmt.Errorf("strace %s: %w", t.name, err)
			}
			sum.WriteString(line)
		}
		sum.WriteString("\n")
	}
	path := filepath.Join(dir, "summary.md")
	if err := os.WriteFile(path, []byte(sum.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(sum.String())
	h.logf("profiles in %s", dir)
	return nil
}

var gcLine = regexp.MustCompile(`(?m)^gc \d+ @[0-9.]+s (\d+)%: .* (\d+) MB goal`)

func (h *harness) profileOne(ctx context.Context, t target, dir string) (string, error) {
	r, err := h.launch(ctx, t, []string{"GODEBUG=gctrace=1"})
	if err != nil {
		return "", err
	}
	defer r.stop()
	if err := h.warmUp(ctx, t, r); err != nil {
		return "", err
	}
	secs := max(1, int((h.f.duration-time.Second)/time.Second))
	base := "http://" + r.front.addr.admin + t.front.pprof
	bin := filepath.Join(h.work, t.front.bin)
	gc0 := len(gcLine.FindAllString(tail(r.front.logs, 1<<30), -1))
	load := loadavg()
	c0, err := cpuTime(r.front.pid())
	if err != nil {
		return "", err
	}

	var wg sync.WaitGroup
	var res wrkResult
	errs := make([]error, 4)
	wg.Go(func() { res, errs[0] = h.load(ctx, r, h.f.duration) })
	wg.Go(func() {
		errs[1] = fetch(ctx, base+"/profile?seconds="+strconv.Itoa(secs), filepath.Join(dir, t.name+".cpu.pprof"))
	})
	wg.Go(func() {
		errs[2] = fetch(ctx, base+"/allocs?seconds="+strconv.Itoa(secs), filepath.Join(dir, t.name+".allocs.pprof"))
	})
	if h.f.perf {
		wg.Go(func() {
			out, err := exec.CommandContext(ctx, "perf", "record", "-e", "cpu-clock", "-F", "999", "-g",
				"-p", strconv.Itoa(r.front.pid()), "-o", filepath.Join(dir, t.name+".perf.data"),
				"--", "sleep", strconv.Itoa(secs)).CombinedOutput()
			if err != nil {
				errs[3] = fmt.Errorf("perf record: %w\n%s", err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	c1, err := cpuTime(r.front.pid())
	if err != nil {
		return "", err
	}
	gcs := gcLine.FindAllStringSubmatch(tail(r.front.logs, 1<<30), -1)
	n := len(gcs) - gc0
	gcPct, goal := "?", "?"
	if len(gcs) > 0 {
		gcPct, goal = gcs[len(gcs)-1][1]+"%", gcs[len(gcs)-1][2]+" MB"
	}
	for _, kind := range []string{"cpu", "allocs"} {
		args := []string{"tool", "pprof", "-top", "-nodecount=40"}
		if kind == "allocs" {
			args = append(args, "-sample_index=alloc_space")
		}
		if err := pprofText(ctx, filepath.Join(dir, t.name+"."+kind+".txt"), append(args, bin, filepath.Join(dir, t.name+"."+kind+".pprof"))...); err != nil {
			return "", err
		}
		if kind == "cpu" {
			if err := pprofText(ctx, filepath.Join(dir, t.name+".cpu-cum.txt"), "tool", "pprof", "-top", "-cum", "-nodecount=60", bin, filepath.Join(dir, t.name+".cpu.pprof")); err != nil {
				return "", err
			}
		}
	}
	if err := pprofText(ctx, filepath.Join(dir, t.name+".allocs-count.txt"), "tool", "pprof", "-top", "-nodecount=40", "-sample_index=alloc_objects", bin, filepath.Join(dir, t.name+".allocs.pprof")); err != nil {
		return "", err
	}
	if h.f.perf {
		data := filepath.Join(dir, t.name+".perf.data")
		for _, sortKey := range []string{"dso", "sym"} {
			out, err := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", "--no-children",
				"--sort", sortKey, "-g", "none", "--percent-limit", "0.5").Output()
			if err != nil {
				return "", fmt.Errorf("perf report: %w", err)
			}
			if err := os.WriteFile(filepath.Join(dir, t.name+".perf-"+sortKey+".txt"), out, 0o644); err != nil {
				return "", err
			}
		}
	}
	cpuReq := perReq(c1-c0, res.requests)
	// The allocation profile is a delta over secs seconds: divide by the requests of that window.
	windowReqs := res.rps * float64(secs)
	allocs := "?"
	objs, err1 := os.ReadFile(filepath.Join(dir, t.name+".allocs-count.txt"))
	space, err2 := os.ReadFile(filepath.Join(dir, t.name+".allocs.txt"))
	if err := errors.Join(err1, err2); err != nil {
		return "", err
	}
	if o, ok := profileTotal(string(objs)); ok && windowReqs > 0 {
		if sp, ok := profileTotal(string(space)); ok {
			allocs = fmt.Sprintf("%.1f allocations, %.0f bytes", o/windowReqs, sp/windowReqs)
		}
	}
	table, err := breakdown(ctx, bin, filepath.Join(dir, t.name+".cpu.pprof"), cpuReq)
	if err != nil {
		return "", err
	}
	perfLine := ""
	if h.f.perf {
		if b, err := os.ReadFile(filepath.Join(dir, t.name+".perf-dso.txt")); err == nil {
			perfLine = "; perf (cpu-clock, whole process): " + perfDSO(b)
		}
	}
	return fmt.Sprintf("- **%s** (load %s): %.0f req/s under profiling, %.1f µs CPU/req; per request (allocation profile) %s; "+
		"%d GCs during the run (%.2f per 1,000 requests), GC CPU since start %s, heap goal %s%s. Files: %s.*\n%s",
		t.name, load, res.rps, cpuReq, allocs, n, 1000*float64(n)/float64(max(1, res.requests)), gcPct, goal,
		perfLine, t.name, table), nil
}

// perfDSO summarises perf report --sort dso: "kernel 57.6%, hello-chassis 41.3%, ...".
func perfDSO(b []byte) string {
	var parts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") || !strings.HasSuffix(f[0], "%") {
			continue
		}
		name := strings.Trim(f[len(f)-1], "[]")
		if name == "kernel.kallsyms" {
			name = "kernel"
		}
		parts = append(parts, name+" "+f[0])
	}
	return strings.Join(parts, ", ")
}

func fetch(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func pprofText(ctx context.Context, path string, args ...string) error {
	out, err := exec.CommandContext(ctx, "go", args...).Output()
	if err != nil {
		return fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return os.WriteFile(path, out, 0o644)
}

// straceOne attaches strace -c -f to every thread of the front process during one wrk run and
// divides the syscalls it counted by the requests wrk completed.
func (h *harness) straceOne(ctx context.Context, t target, dir string) (string, error) {
	r, err := h.launch(ctx, t, nil)
	if err != nil {
		return "", err
	}
	defer r.stop()
	if err := h.warmUp(ctx, t, r); err != nil {
		return "", err
	}
	tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", r.front.pid()))
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, t.name+".strace.txt")
	args := []string{"-c", "-f", "-o", out}
	for _, tid := range tids {
		args = append(args, "-p", tid.Name())
	}
	cmd := exec.Command("strace", args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	// strace says "Process N attached" once per thread on standard error: wait for all of them.
	attached := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		n := 0
		for sc.Scan() {
			if strings.Contains(sc.Text(), "attached") {
				if n++; n == len(tids) {
					close(attached)
				}
			}
		}
		if n < len(tids) {
			close(attached)
		}
	}()
	select {
	case <-attached:
	case <-time.After(10 * time.Second):
	}
	res, werr := h.load(ctx, r, h.f.duration)
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
	if werr != nil {
		return "", werr
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return "", err
	}
	total, top := parseStrace(b)
	per := float64(total) / float64(max(1, res.requests))
	var parts []string
	for _, c := range top {
		parts = append(parts, fmt.Sprintf("%s %.2f", c.name, float64(c.calls)/float64(max(1, res.requests))))
	}
	return fmt.Sprintf("  - strace (%.0f req/s while traced): **%.2f syscalls per request**: %s. File: %s.strace.txt\n",
		res.rps, per, strings.Join(parts, ", "), t.name), nil
}

type syscallCount struct {
	name  string
	calls int64
}

// parseStrace reads strace -c's table: "% time seconds usecs/call calls [errors] syscall" rows and
// a "total" row. It returns the total calls and the rows with the most calls first.
func parseStrace(b []byte) (int64, []syscallCount) {
	var total int64
	var rows []syscallCount
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		f := strings.Fields(string(line))
		if len(f) < 5 || strings.HasPrefix(f[0], "%") || strings.HasPrefix(f[0], "-") {
			continue
		}
		calls, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			continue
		}
		name := f[len(f)-1]
		if name == "total" {
			total = calls
			continue
		}
		rows = append(rows, syscallCount{name, calls})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].calls > rows[j].calls })
	if len(rows) > 8 {
		rows = rows[:8]
	}
	return total, rows
}
