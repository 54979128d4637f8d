package chassistest_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudchassis/kit/chassistest"
)

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
}

// statuses sends n GETs through c and returns the status of each, 0 for a transport error.
func statuses(t *testing.T, c *http.Client, url string, n int) []int {
	t.Helper()
	out := make([]int, n)
	for i := range out {
		res, err := c.Get(url)
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		out[i] = res.StatusCode
	}
	return out
}

func TestFaultTransportFaults(t *testing.T) {
	ft := chassistest.NewFaultTransport(chassistest.HandlerTransport(okHandler()))
	c := &http.Client{Transport: ft}

	ft.Set(chassistest.Script(chassistest.Fail(503), chassistest.Fail(503), chassistest.OK()))
	if got := statuses(t, c, "http://svc/", 4); !equalInts(got, []int{503, 503, 200, 200}) {
		t.Errorf("script: %v", got)
	}
	ft.Set(chassistest.Reset())
	_, err := c.Get("http://svc/")
	var op *net.OpError
	if !errors.Is(err, syscall.ECONNRESET) || !errors.As(err, &op) || op.Op != "read" {
		t.Errorf("reset: %v", err)
	}
	ft.Set(chassistest.Unreachable())
	if _, err := c.Get("http://svc/"); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("unreachable: %v", err)
	}
	ft.Set(chassistest.Chain(chassistest.Script(nil, chassistest.Fail(500)), chassistest.Fail(418)))
	if got := statuses(t, c, "http://svc/", 3); !equalInts(got, []int{418, 500, 418}) {
		t.Errorf("chain: %v", got)
	}
	res, err := chassistest.Fail(503)(httptest.NewRequest(http.MethodGet, "http://svc/", nil), nil)
	if err != nil || res.Header.Get(chassistest.FaultHeader) == "" {
		t.Errorf("Fail response not marked: %v %v", res.Header, err)
	}
	ft.Set(nil)
	if got := statuses(t, c, "http://svc/", 1); got[0] != 200 {
		t.Errorf("cleared: %v", got)
	}
	if n := ft.Requests(); n != 4+1+1+3+1 {
		t.Errorf("Requests() = %d", n)
	}
}

func TestErrorRateIsSeeded(t *testing.T) {
	run := func(seed uint64) []int {
		ft := chassistest.NewFaultTransport(chassistest.HandlerTransport(okHandler()))
		ft.Set(chassistest.ErrorRate(0.3, seed))
		return statuses(t, &http.Client{Transport: ft}, "http://svc/", 200)
	}
	a, b, other := run(7), run(7), run(8)
	if !equalInts(a, b) {
		t.Error("same seed, different faults")
	}
	if equalInts(a, other) {
		t.Error("different seeds, same faults")
	}
	fails := 0
	for _, s := range a {
		if s == 503 {
			fails++
		}
	}
	if fails < 40 || fails > 80 { // 30% of 200, within ~3.5 standard deviations
		t.Errorf("%d of 200 failed at a 30%% rate", fails)
	}
}

func TestBlackholeAndLatencyFollowTheContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ft := chassistest.NewFaultTransport(chassistest.HandlerTransport(okHandler()))
		c := &http.Client{Transport: ft}
		for _, f := range []chassistest.Fault{chassistest.Blackhole(), chassistest.Latency(time.Hour)} {
			ft.Set(f)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			start := time.Now()
			_, _, err := get(t, ctx, c, "http://svc/")
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 2*time.Second {
				t.Errorf("err %v after %v", err, time.Since(start))
			}
		}
		ft.Set(chassistest.Latency(250 * time.Millisecond))
		start := time.Now()
		if got := statuses(t, c, "http://svc/", 1); got[0] != 200 || time.Since(start) != 250*time.Millisecond {
			t.Errorf("latency: %v after %v", got, time.Since(start))
		}
	})
}

func TestProxyOverTCP(t *testing.T) {
	backend := httptest.NewServer(okHandler())
	defer backend.Close()
	p := chassistest.NewProxy(t, backend.Listener.Addr().String())
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}

	if got := statuses(t, c, p.URL(), 1); got[0] != 200 {
		t.Fatalf("relay: %v", got)
	}
	p.Set(chassistest.Fail(503))
	if got := statuses(t, c, p.URL(), 1); got[0] != 503 {
		t.Errorf("fail: %v", got)
	}
	p.Set(chassistest.Reset())
	if _, err := c.Get(p.URL()); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("reset: %v", err)
	}
	p.Set(chassistest.Blackhole())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, _, err := get(t, ctx, c, p.URL())
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("blackhole: %v", err)
	}
	// Close ends a blackholed request that nobody gives up on.
	p.Set(chassistest.Blackhole())
	before := p.Requests()
	done := make(chan error, 1)
	go func() { _, _, err := get(t, context.Background(), c, p.URL()); done <- err }()
	waitFor(t, func() bool { return p.Requests() == before+1 })
	if err := p.Close(); err != nil {
		t.Error(err)
	}
	if err := <-done; err == nil {
		t.Error("blackholed request succeeded after Close")
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
