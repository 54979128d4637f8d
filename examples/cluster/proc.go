package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// ProcState is where an instance is in its life.
type ProcState string

// Instance states, as the dashboard shows them.
const (
	StateStarting ProcState = "starting"
	StateReady    ProcState = "ready"
	StateDraining ProcState = "draining" // SIGTERM sent
	StateKilled   ProcState = "killed"   // SIGKILL sent by the chaos schedule
	StateExited   ProcState = "exited"
)

// proc is one service instance running as a child process.
type proc struct {
	Service string
	ID      string // "pricing-2": also its INSTANCE_ID, so responses name it
	bin     string
	env     []string

	cmd    *exec.Cmd
	ready  chan struct{} // closed on the "ready" log line
	exited chan struct{} // closed once Wait returned

	mu        sync.Mutex
	state     ProcState
	addr      string
	adminAddr string
	started   time.Time
	readyAt   time.Time
	exitedAt  time.Time
	exitErr   error
	tail      []string // last log lines, for failure reports
}

// maxTail is how many log lines a proc keeps.
const maxTail = 40

func newProc(service, id, bin string, env []string) *proc {
	return &proc{Service: service, ID: id, bin: bin, env: env, ready: make(chan struct{}), exited: make(chan struct{}), state: StateStarting}
}

// start runs the binary. Its standard output (the JSON log) is read for the "ready" line, which
// carries the bound addresses.
func (p *proc) start() error {
	cmd := exec.Command(p.bin)
	cmd.Env = p.env
	detach(cmd)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout // both go through the same pipe and the same reader
	p.mu.Lock()
	p.cmd = cmd
	p.started = time.Now()
	p.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.ID, err)
	}
	go p.read(stdout)
	return nil
}

// read consumes the log until the process closes its output, then reaps it.
func (p *proc) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	readySeen := false
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		if len(p.tail) >= maxTail {
			p.tail = append(p.tail[:0], p.tail[1:]...)
		}
		p.tail = append(p.tail, line)
		p.mu.Unlock()
		if readySeen || len(line) == 0 || line[0] != '{' {
			continue
		}
		var m struct {
			Msg       string `json:"msg"`
			Addr      string `json:"addr"`
			AdminAddr string `json:"admin_addr"`
		}
		if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "ready" {
			readySeen = true
			p.mu.Lock()
			p.addr, p.adminAddr, p.readyAt = m.Addr, m.AdminAddr, time.Now()
			if p.state == StateStarting {
				p.state = StateReady
			}
			p.mu.Unlock()
			close(p.ready)
		}
	}
	_, _ = io.Copy(io.Discard, r)
	err := p.cmd.Wait()
	p.mu.Lock()
	p.exitErr, p.exitedAt = err, time.Now()
	if p.state != StateKilled {
		p.state = StateExited
	}
	p.mu.Unlock()
	close(p.exited)
}

// waitReady waits for the ready line, the process' exit, or ctx.
func (p *proc) waitReady(ctx context.Context) error {
	select {
	case <-p.ready:
		return nil
	case <-p.exited:
		return fmt.Errorf("%s exited before it was ready (%v):\n%s", p.ID, p.exitErr, p.logTail())
	case <-ctx.Done():
		return fmt.Errorf("%s not ready: %w\n%s", p.ID, ctx.Err(), p.logTail())
	}
}

// signal sends sig and records the new state; an exited process is left alone.
func (p *proc) signal(sig syscall.Signal, state ProcState) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil || p.state == StateExited {
		return nil
	}
	select {
	case <-p.exited:
		return nil
	default:
	}
	if p.state != StateKilled {
		p.state = state
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", p.ID, err)
	}
	return nil
}

// stop sends SIGTERM and waits up to grace for the exit, then sends SIGKILL and waits for it. It
// reports whether SIGKILL was needed.
func (p *proc) stop(grace time.Duration) (forced bool) {
	if err := p.signal(syscall.SIGTERM, StateDraining); err != nil {
		return false
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.exited:
		return false
	case <-t.C:
	}
	_ = p.signal(syscall.SIGKILL, StateKilled)
	<-p.exited
	return true
}

// Pid returns the child's process id, 0 before start.
func (p *proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// snapshot returns the instance's public fields under the lock.
func (p *proc) snapshot() InstanceInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	in := InstanceInfo{Service: p.Service, ID: p.ID, State: p.state, Addr: p.addr, AdminAddr: p.adminAddr, Started: p.started}
	if p.cmd != nil && p.cmd.Process != nil {
		in.Pid = p.cmd.Process.Pid
	}
	if !p.readyAt.IsZero() {
		in.StartupMs = p.readyAt.Sub(p.started).Milliseconds()
	}
	return in
}

func (p *proc) logTail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := ""
	for _, l := range p.tail {
		out += "  " + l + "\n"
	}
	return out
}

// InstanceInfo describes an instance for the dashboard and the summary.
type InstanceInfo struct {
	Service   string    `json:"service"`
	ID        string    `json:"id"`
	State     ProcState `json:"state"`
	Pid       int       `json:"pid"`
	Addr      string    `json:"addr"`
	AdminAddr string    `json:"admin_addr"`
	Started   time.Time `json:"started"`
	StartupMs int64     `json:"startup_ms,omitempty"`
}
