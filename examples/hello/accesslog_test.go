package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestAccessLogLosesNoLineOnShutdown is issue 15's contract for the buffered access log (default
// LOG_BUFFER): every request that got a response has its access-log line on standard output after
// SIGTERM, including the requests served while draining, whose lines only the shutdown flush can
// write (the drain is shorter than the flush interval and the lines fill less than the buffer).
func TestAccessLogLosesNoLineOnShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a process")
	}
	const (
		n           = 500 // requests before SIGTERM
		concurrency = 8
		drainDelay  = 300 * time.Millisecond
		maxDraining = 2000 // bound on the requests sent while draining
	)
	p := startHello(t, build(t), "DRAIN_DELAY="+drainDelay.String(), "SHUTDOWN_TIMEOUT=10s")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}, Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	// While draining, a connection per request: a request sent on a kept-alive connection just as the
	// drain closes it may be served and then retried by the Transport, and so be served (and logged)
	// twice. The server answers Connection: close from then on anyway.
	drainClient := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

	var (
		mu        sync.Mutex
		responded = map[string]bool{} // request path -> got a response
	)
	get := func(client *http.Client, path string) error {
		res, err := client.Get("http://" + p.addr + path)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		mu.Lock()
		responded[path] = true
		mu.Unlock()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", path, res.Status)
		}
		return nil
	}

	// N requests, at most concurrency at a time; every one must succeed.
	next := make(chan int)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for i := range next {
				if err := get(client, fmt.Sprintf("/hello/before-%d", i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// SIGTERM, then keep sending, one at a time, until the listener closes (or the bound).
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	draining := 0
	for deadline := time.Now().Add(10 * time.Second); draining < maxDraining && time.Now().Before(deadline); draining++ {
		if err := get(drainClient, fmt.Sprintf("/hello/draining-%d", draining)); err != nil {
			break // the listener closed, or the last connection was closed with Connection: close
		}
	}
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("process did not exit after SIGTERM")
	}
	if p.exitErr != nil {
		t.Errorf("exit: %v, want code 0", p.exitErr)
	}

	logged := map[string]int{}
	for line := range strings.Lines(p.logs.String()) {
		var m struct{ Msg, Path string }
		if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "request" && strings.HasPrefix(m.Path, "/hello/") {
			logged[m.Path]++
		}
	}
	mu.Lock()
	defer mu.Unlock()
	drained := 0
	for path := range responded {
		if strings.HasPrefix(path, "/hello/draining-") {
			drained++
		}
		if logged[path] != 1 {
			t.Errorf("%s: %d access-log lines, want 1", path, logged[path])
		}
	}
	for path, c := range logged {
		if !responded[path] {
			t.Errorf("%s: %d access-log lines for a request without a response", path, c)
		}
	}
	if len(responded) < n || drained == 0 {
		t.Errorf("%d responses, %d of them while draining: want %d before SIGTERM and some while draining",
			len(responded), drained, n)
	}
	t.Logf("%d access-log lines for %d responses (%d while draining)", len(logged), len(responded), drained)
}
