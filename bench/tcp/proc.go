package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// proc is a running server process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	addr   addrs
	logs   string // file holding its standard output and error
	grpc   bool   // serves gRPC on addr.public: ready when its health service says SERVING
	prefix string // before request paths (server.prefix)
	done   chan struct{}
	err    error
}

// start runs s pinned to cpu with taskset (which execs the server, so the pid is the server's),
// standard output and error to a file, and waits until GET /hello/ready answers 200 (for a gRPC
// server: until grpc.health.v1.Health/Check answers SERVING).
func (h *harness) start(ctx context.Context, name string, s server, a addrs, extraEnv []string) (*proc, error) {
	args, env := s.command(a)
	logs := filepath.Join(h.work, fmt.Sprintf("%s-%d.log", name, time.Now().UnixNano()))
	out, err := os.Create(logs)
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(h.work, s.bin)
	if s.onPath {
		if bin, err = exec.LookPath(s.bin); err != nil {
			out.Close()
			return nil, err
		}
	}
	if s.conf != nil {
		conf := filepath.Join(h.work, fmt.Sprintf("%s-%d.cfg", name, time.Now().UnixNano()))
		if err := os.WriteFile(conf, []byte(s.conf(a)), 0o600); err != nil {
			out.Close()
			return nil, err
		}
		args = append(args, "-f", conf)
	}
	cmd := exec.Command("taskset", append([]string{"-c", h.f.serverCPU, bin}, args...)...)
	cmd.Env = append(append(os.Environ(), env...), extraEnv...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, addr: a, logs: logs, grpc: s.grpc, prefix: s.prefix, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	if err := p.waitReady(ctx, 30*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	ready := p.httpReady()
	if p.grpc {
		conn, err := grpc.NewClient(p.addr.public, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		ready = grpcReady(conn)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready(ctx) {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before ready: %v; log %s:\n%s", p.name, p.err, p.logs, tail(p.logs, 2000))
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v: %w; log %s:\n%s", p.name, limit, ctx.Err(), p.logs, tail(p.logs, 2000))
		case <-tick.C:
		}
	}
}

func (p *proc) httpReady() func(context.Context) bool {
	c := &http.Client{Timeout: time.Second}
	return func(ctx context.Context) bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr.public+p.prefix+"/hello/ready", nil)
		resp, err := c.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}

func grpcReady(conn *grpc.ClientConn) func(context.Context) bool {
	hc := healthpb.NewHealthClient(conn)
	return func(ctx context.Context) bool {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}
}

// stop sends SIGTERM and, after two seconds, SIGKILL; it returns once the process is gone.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(2 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// cpuTime is the process' user plus system time, from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after it start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	ut, err1 := strconv.ParseInt(fields[11], 10, 64)
	st, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every Linux architecture Go
// supports (the kernel exports it as a constant to user space).
const clockTicks = 100

// memory returns VmRSS and VmHWM of pid, in bytes, from /proc/<pid>/status.
func memory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		k, v, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		var dst *int64
		switch string(k) {
		case "VmRSS":
			dst = &rss
		case "VmHWM":
			dst = &hwm
		default:
			continue
		}
		f := strings.Fields(string(v)) // "1234 kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %q", pid, k, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, err
		}
		*dst = n << 10
	}
	return rss, hwm, nil
}

// freeAddr returns a loopback address with a port free at the time of the call.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func splitAddr(a string) (host, port string) {
	host, port, _ = net.SplitHostPort(a)
	return host, port
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
