package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// proc is a running hello binary.
type proc struct {
	cmd          *exec.Cmd
	addr, admin  string
	exited       chan struct{}
	exitErr      error
	logs         *lockedBuf
	readyElapsed time.Duration
}

func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hello")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func startHello(t *testing.T, bin string, env ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin), exited: make(chan struct{}), logs: &lockedBuf{}}
	p.cmd.Env = append(os.Environ(), append([]string{"HOST=127.0.0.1", "PORT=0", "ADMIN_PORT=0"}, env...)...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.logs
	t0 := time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Bytes()
			p.logs.Write(append(line, '\n'))
			var m map[string]any
			if json.Unmarshal(line, &m) == nil && m["msg"] == "ready" {
				p.addr, _ = m["addr"].(string)
				p.admin, _ = m["admin_addr"].(string)
				p.readyElapsed = time.Since(t0)
				close(ready)
			}
		}
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("hello's output:\n%s", p.logs.String())
		}
	})
	select {
	case <-ready:
	case <-p.exited:
		t.Fatalf("hello exited before ready: %v\n%s", p.exitErr, p.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("hello not ready after 20s\n%s", p.logs.String())
	}
	return p
}

// TestDrainLosesNoRequest is the rolling-update contract: under steady load (200 req/s of 50 ms
// requests), SIGTERM turns /readyz to 503 while the listener still accepts; a load balancer that
// stops sending on the first 503 loses no request; the process exits 0 within
// DRAIN_DELAY + the longest request + a margin.
func TestDrainLosesNoRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a process")
	}
	const (
		drainDelay = time.Second
		rate       = 200 // requests per second, open loop
		work       = 50 * time.Millisecond
		margin     = time.Second
	)
	// Default shedder settings: 200 req/s of 50 ms requests put about 10 in flight on a fresh
	// instance from its first second, and the plain client below never retries a 503.
	p := startHello(t, build(t), "DRAIN_DELAY="+drainDelay.String(), "SHUTDOWN_TIMEOUT=10s", "ACCESS_LOG=false")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 100}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()

	var (
		removed   atomic.Bool // the "load balancer" saw 503 and stopped sending
		sent, ok  atomic.Int64
		failures  = make(chan error, 1000)
		wg        sync.WaitGroup
		t503      time.Time
		tClosed   time.Time
		probeDone = make(chan struct{})
	)
	// Readiness prober, like a load balancer's health check every 10 ms.
	go func() {
		defer close(probeDone)
		for range time.Tick(10 * time.Millisecond) {
			res, err := client.Get("http://" + p.admin + "/readyz")
			if err != nil {
				return // admin server gone: the process is exiting
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == 503 && !removed.Load() {
				t503 = time.Now()
				removed.Store(true)
			}
		}
	}()
	// Open-loop load generator, bounded to 10 s.
	stopLoad := make(chan struct{})
	go func() {
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case <-stopLoad:
				return
			case <-deadline:
				return
			case <-tick.C:
			}
			if removed.Load() {
				continue
			}
			sent.Add(1)
			wg.Go(func() {
				if err := get(client, fmt.Sprintf("http://%s/hello/load?delay=%s", p.addr, work)); err != nil {
					select {
					case failures <- err:
					default:
					}
					return
				}
				ok.Add(1)
			})
		}
	}()

	time.Sleep(2 * time.Second) // steady state
	sigAt := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Watch for the listener to close: dials fail from then on.
	for {
		c, err := net.DialTimeout("tcp", p.addr, 100*time.Millisecond)
		if err != nil {
			tClosed = time.Now()
			break
		}
		c.Close()
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case <-p.exited:
	case <-time.After(drainDelay + work + margin + 5*time.Second):
		t.Fatal("process did not exit")
	}
	exitAfter := time.Since(sigAt)
	close(stopLoad)
	wg.Wait()
	<-probeDone
	close(failures)

	for err := range failures {
		t.Errorf("failed request: %v", err)
	}
	if p.exitErr != nil {
		t.Errorf("exit: %v, want code 0", p.exitErr)
	}
	if t503.IsZero() || !t503.Before(tClosed) {
		t.Errorf("/readyz 503 at %v, listener closed at %v: readiness must fail first", t503.Sub(sigAt), tClosed.Sub(sigAt))
	}
	if limit := drainDelay + work + margin; exitAfter > limit {
		t.Errorf("exit %v after SIGTERM, want within %v", exitAfter, limit)
	}
	if sent.Load() < rate {
		t.Errorf("only %d requests sent", sent.Load())
	}
	t.Logf("sent %d, succeeded %d; readyz 503 after %v, listener closed after %v, exit after %v",
		sent.Load(), ok.Load(), t503.Sub(sigAt).Round(time.Millisecond), tClosed.Sub(sigAt).Round(time.Millisecond),
		exitAfter.Round(time.Millisecond))
}

type lockedBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
