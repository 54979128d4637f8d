package lb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudchassis/kit/discovery"
)

// servers starts n loopback servers running h and returns them as instances s0..s<n-1>.
func servers(t *testing.T, n int, h func(id string, w http.ResponseWriter, r *http.Request)) []discovery.Instance {
	t.Helper()
	out := make([]discovery.Instance, n)
	for i := range out {
		id := fmt.Sprintf("s%d", i)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h(id, w, r) }))
		t.Cleanup(srv.Close)
		u, _ := url.Parse(srv.URL)
		port, _ := strconv.Atoi(u.Port())
		out[i] = discovery.Instance{ID: id, Address: u.Hostname(), Port: port}
	}
	return out
}

// base is a transport the test owns, so idle connections can be closed before goleak looks.
func base(t *testing.T) *http.Transport {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestTransportSpreadsAndRewrites(t *testing.T) {
	insts := servers(t, 3, func(id string, w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", id, r.Host, r.URL.RequestURI())
	})
	b := mustFixed(t, insts, WithPolicy(RoundRobin), WithBaseTransport(base(t)))
	c := &http.Client{Transport: NewTransport(b)}
	seen := map[string]int{}
	for range 9 {
		_, body := get(t, c, "http://svc:1234/items/7?x=1")
		f := strings.Fields(body)
		if f[1] != "svc:1234" || f[2] != "/items/7?x=1" {
			t.Fatalf("instance saw Host %q, URI %q", f[1], f[2])
		}
		seen[f[0]]++
	}
	if len(seen) != 3 || seen["s0"] != 3 {
		t.Fatalf("spread %v", seen)
	}
	for _, e := range b.order {
		if n := e.inflight.Load(); n != 0 {
			t.Fatalf("%s: %d in flight after bodies were closed", e.key, n)
		}
	}
}

func TestTransportHoldsCallUntilBodyDone(t *testing.T) {
	insts := servers(t, 1, func(_ string, w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") })
	b := mustFixed(t, insts, WithBaseTransport(base(t)))
	c := &http.Client{Transport: NewTransport(b)}
	e := b.order[0]

	resp, err := c.Get("http://svc/")
	if err != nil {
		t.Fatal(err)
	}
	if n := e.inflight.Load(); n != 1 {
		t.Fatalf("in flight %d before the body was read", n)
	}
	if _, err := io.ReadAll(resp.Body); err != nil { // EOF releases
		t.Fatal(err)
	}
	if n := e.inflight.Load(); n != 0 {
		t.Fatalf("in flight %d after EOF", n)
	}
	resp.Body.Close() // and Close does not release twice
	if n := e.inflight.Load(); n != 0 {
		t.Fatalf("in flight %d after EOF and Close", n)
	}
	resp, err = c.Head("http://svc/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := e.inflight.Load(); n != 0 {
		t.Fatalf("in flight %d after HEAD", n)
	}
}

func TestTransportEjectsFailingInstance(t *testing.T) {
	insts := servers(t, 4, func(id string, w http.ResponseWriter, _ *http.Request) {
		if id == "s1" {
			w.WriteHeader(http.StatusBadGateway)
		}
		io.WriteString(w, id)
	})
	b := mustFixed(t, insts, WithPolicy(RoundRobin), WithBaseTransport(base(t)))
	c := &http.Client{Transport: NewTransport(b)}
	bad := 0
	for range 40 {
		if code, _ := get(t, c, "http://svc/"); code != 200 {
			bad++
		}
	}
	if bad != 5 { // five consecutive 5xx, then s1 is out
		t.Fatalf("%d failed calls, want 5", bad)
	}
}

func TestTransportClassification(t *testing.T) {
	var mode atomic.Value
	mode.Store("ok")
	release := make(chan struct{})
	insts := servers(t, 1, func(_ string, w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case "429":
			w.WriteHeader(http.StatusTooManyRequests)
		case "hang":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	})
	defer close(release)
	var calls []string
	var mu sync.Mutex
	b := mustFixed(t, insts, WithBaseTransport(base(t)), WithClassifier(func(resp *http.Response, err error) discovery.Class {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, fmt.Sprint(resp != nil, err != nil))
		return discovery.Classify(resp, err)
	}))
	c := &http.Client{Transport: NewTransport(b)}
	e := b.order[0]

	get(t, c, "http://svc/")
	mode.Store("429")
	for range 10 {
		get(t, c, "http://svc/")
	}
	if len(ejectedIDs(b)) != 0 || e.consecutive != 0 {
		t.Fatal("429 counted as a failure of the instance")
	}

	mode.Store("hang")
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc/", nil)
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	if _, err := c.Do(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled call: %v", err)
	}
	if e.consecutive != 0 || e.inflight.Load() != 0 {
		t.Fatalf("caller's cancel counted: consecutive %d, in flight %d", e.consecutive, e.inflight.Load())
	}
	mu.Lock()
	n := len(calls)
	mu.Unlock()
	if n != 11 {
		t.Fatalf("classifier called %d times, want 11 (not for the caller's cancel)", n)
	}
}

func TestTransportErrors(t *testing.T) {
	b := mustFixed(t, nil)
	c := &http.Client{Transport: NewTransport(b)}
	_, err := c.Get("http://svc/")
	var nie *NoInstancesError
	if !errors.Is(err, ErrNoInstances) || !errors.As(err, &nie) || nie.Service != "svc" {
		t.Fatalf("empty service: %v", err)
	}
	if _, err := c.Get("http://other/"); err == nil || !strings.Contains(err.Error(), `"other" is not service "svc"`) {
		t.Fatalf("wrong host: %v", err)
	}

	// Nothing listens at the instance's port: a connection error, wrapped with the instance.
	ln := httptest.NewServer(http.NotFoundHandler())
	u, _ := url.Parse(ln.URL)
	ln.Close()
	port, _ := strconv.Atoi(u.Port())
	dead := mustFixed(t, []discovery.Instance{{ID: "dead", Address: "127.0.0.1", Port: port}}, WithBaseTransport(base(t)))
	_, err = (&http.Client{Transport: NewTransport(dead)}).Get("http://svc/")
	if err == nil || !strings.Contains(err.Error(), "instance dead at 127.0.0.1:") {
		t.Fatalf("dead instance: %v", err)
	}
	if dead.order[0].consecutive != 1 || dead.order[0].inflight.Load() != 0 {
		t.Fatal("connection error not counted as a failure")
	}
}

func TestTransportWaitsForFirstSnapshot(t *testing.T) {
	insts := servers(t, 1, func(id string, w http.ResponseWriter, _ *http.Request) { io.WriteString(w, id) })
	w := newFakeWatcher()
	b, err := New("svc", w, WithBaseTransport(base(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := &http.Client{Transport: NewTransport(b)}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://svc/", nil)
	if _, err := c.Do(req); !errors.Is(err, ErrNoInstances) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no snapshot before the deadline: %v", err)
	}

	done := make(chan string)
	go func() {
		_, body := get(t, c, "http://svc/")
		done <- body
	}()
	time.Sleep(10 * time.Millisecond) // let the call start waiting (either order is correct)
	w.set(insts...)
	if body := <-done; body != "s0" {
		t.Fatalf("body %q", body)
	}
}

// breakerish is a per-instance transport with an Available method, as resilience's breaker has.
type breakerish struct {
	next http.RoundTripper
	open atomic.Bool
}

func (b *breakerish) RoundTrip(r *http.Request) (*http.Response, error) { return b.next.RoundTrip(r) }
func (b *breakerish) Available() bool                                   { return !b.open.Load() }

func TestInstanceTransportBuiltOncePerInstance(t *testing.T) {
	insts := servers(t, 3, func(id string, w http.ResponseWriter, _ *http.Request) { io.WriteString(w, id) })
	var mu sync.Mutex
	built := map[string]*breakerish{}
	b := mustFixed(t, insts, WithPolicy(RoundRobin), WithBaseTransport(base(t)),
		WithInstanceTransport(func(inst discovery.Instance, next http.RoundTripper) http.RoundTripper {
			mu.Lock()
			defer mu.Unlock()
			if built[inst.ID] != nil {
				t.Errorf("transport of %s built twice", inst.ID)
			}
			br := &breakerish{next: next}
			built[inst.ID] = br
			return br
		}))
	b.update(insts)     // same instances again: nothing rebuilt
	b.update(insts[:2]) // s2 leaves
	delete(built, "s2")
	b.update(insts) // and comes back: built anew

	c := &http.Client{Transport: NewTransport(b)}
	built["s0"].open.Store(true)
	seen := map[string]int{}
	for range 12 {
		_, body := get(t, c, "http://svc/")
		seen[body]++
	}
	if seen["s0"] != 0 || len(seen) != 2 {
		t.Fatalf("an instance whose breaker is open was picked: %v", seen)
	}
}

// TestRetryAvoidsTriedInstance: a call that already used an instance (its context carries a
// discovery.Tried) is sent to another one, even where P2C would prefer the first.
func TestRetryAvoidsTriedInstance(t *testing.T) {
	var hits [2]atomic.Int64
	var srvs [2]*httptest.Server
	for i := range srvs {
		srvs[i] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits[i].Add(1)
		}))
		defer srvs[i].Close()
	}
	insts := make([]discovery.Instance, 2)
	for i, s := range srvs {
		u, _ := url.Parse(s.URL)
		port, _ := strconv.Atoi(u.Port())
		insts[i] = discovery.Instance{ID: fmt.Sprint("i", i), Address: u.Hostname(), Port: port}
	}
	b, err := NewFixed("svc", insts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	tr := NewTransport(b)
	for range 50 {
		tried := new(discovery.Tried)
		for range 2 { // a first attempt and its retry
			req, _ := http.NewRequestWithContext(context.Background(), "GET", "http://svc/", nil)
			res, err := tr.RoundTripTried(req, tried)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
		}
		if tried.Len() != 2 {
			t.Fatalf("the retry went to the instance already tried")
		}
	}
	if hits[0].Load() != 50 || hits[1].Load() != 50 {
		t.Fatalf("hits %d/%d, want 50/50", hits[0].Load(), hits[1].Load())
	}
}

// TestAvoidingPrefersTheLessLoaded: when the pick was already tried, P2C chooses among the untried
// instances by load too, so a retry or hedge does not land on the slow instance P2C steers around.
func TestAvoidingPrefersTheLessLoaded(t *testing.T) {
	insts := []discovery.Instance{{ID: "a", Address: "10.0.0.1", Port: 1}, {ID: "slow", Address: "10.0.0.2", Port: 1}, {ID: "fast", Address: "10.0.0.3", Port: 1}}
	for _, p := range []string{P2C, LeastRequest, Random} {
		b, err := NewFixed("svc", insts, WithPolicy(p))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range b.table.Load().Endpoints {
			switch e.key {
			case "slow":
				e.Done(500*time.Millisecond, nil)
				e.inflight.Add(5) // busy, too (LeastRequest)
			case "fast", "a":
				e.Done(time.Millisecond, nil)
			}
		}
		got := map[string]int{}
		for range 300 {
			tried := &discovery.Tried{}
			tried.Add("a")
			e, err := b.pick(context.Background(), tried)
			if err != nil {
				t.Fatal(err)
			}
			got[e.key]++
			e.Release()
		}
		if p == Random {
			// One choice, uniform among the untried: both appear.
			if got["slow"] == 0 || got["fast"] == 0 {
				t.Fatalf("%v: %v, want both untried instances", p, got)
			}
		} else if got["slow"] != 0 || got["a"] > 300/2 {
			// "a" is the pick itself whenever P2C chose it and the two others are compared; only the
			// comparison between slow and fast matters here.
			t.Fatalf("%v: picks avoiding a: %v, want fast over slow", p, got)
		}
		b.Close()
	}
}
