package resilience

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/resilience/policy"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeBackend answers attempts through a script: each call gets the next step (the last repeats).
type step struct {
	status int
	err    error
	delay  time.Duration
	header http.Header
}

// recorder is a fake balancer + transport: it "picks" instances round robin, skips unavailable ones,
// and records every attempt in order.
type recorder struct {
	mu        sync.Mutex
	instances []string
	steps     map[string][]step // per instance
	calls     []string
	bodies    []string
	headers   []http.Header
	open      map[string]bool
	next      int
}

func newRecorder(instances ...string) *recorder {
	return &recorder{instances: instances, steps: map[string][]step{}, open: map[string]bool{}}
}

func (r *recorder) pick() (string, step, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for range r.instances {
		id := r.instances[r.next%len(r.instances)]
		r.next++
		if r.open[id] {
			continue
		}
		s := r.steps[id]
		n := 0
		for _, c := range r.calls {
			if c == id {
				n++
			}
		}
		var st step
		if len(s) > 0 {
			st = s[min(n, len(s)-1)]
		}
		r.calls = append(r.calls, id)
		return id, st, len(r.calls)
	}
	return "", step{}, 0
}

var errNoInstances = errors.New("fake lb: no instances")

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	id, st, _ := r.pick()
	if id == "" {
		return nil, errNoInstances
	}
	var body string
	if req.Body != nil {
		b, _ := io.ReadAll(req.Body)
		req.Body.Close()
		body = string(b)
	}
	r.mu.Lock()
	r.bodies = append(r.bodies, body)
	r.headers = append(r.headers, req.Header.Clone())
	r.mu.Unlock()
	if st.delay > 0 {
		t := time.NewTimer(st.delay)
		select {
		case <-t.C:
		case <-req.Context().Done():
			t.Stop()
			return nil, req.Context().Err()
		}
	}
	if st.err != nil {
		return nil, st.err
	}
	code := st.status
	if code == 0 {
		code = 200
	}
	h := st.header
	if h == nil {
		h = http.Header{}
	}
	return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader(id)), Request: req}, nil
}

func (r *recorder) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func get(t *testing.T, ctx context.Context, rt http.RoundTripper, method, body string) (*http.Response, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://dep.invalid/x", rd)
	if err != nil {
		t.Fatal(err)
	}
	return rt.RoundTrip(req)
}

func readClose(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return string(b)
}

var net_OpError = net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}

// testBreaker is a breaker with the package's telemetry, built as Dependency builds its breakers.
type testBreaker struct {
	*policy.Breaker
	name     string
	tel      *instruments
	classify discovery.Classifier
}

func newTestBreaker(cfg policy.BreakerConfig, name string, opts ...Option) *testBreaker {
	o := newOptions(opts)
	tel := o.instruments()
	b := newBreaker(cfg, name, scopeInstance, tel)
	if b == nil {
		return nil
	}
	return &testBreaker{Breaker: b, name: name, tel: tel, classify: o.classify}
}

// Wrap is the breaker as a Middleware, as Dependency.Instance installs it.
func (b *testBreaker) Wrap(next http.RoundTripper) http.RoundTripper {
	return wrapBreaker(b.Breaker, b.name, b.tel, b.classify, next)
}

// AllowContext is the breaker's permit as the tests check it: nil, or a *RejectedError.
func (b *testBreaker) AllowContext(ctx context.Context) error {
	if b.Breaker.Allow(ctx) {
		return nil
	}
	return &RejectedError{Reason: semconv.ReasonBreakerOpen, Instance: b.name, RetryIn: b.RetryIn()}
}

func (b *testBreaker) Allow() error { return b.AllowContext(context.Background()) }

func (b *testBreaker) RecordContext(ctx context.Context, o policy.Outcome) { b.Breaker.Record(ctx, o) }

func (b *testBreaker) Record(o policy.Outcome) { b.Breaker.Record(context.Background(), o) }

// deadlineMiddleware is the server side of deadline propagation as a middleware, as a server not
// built with chassis would write it around WithPropagatedDeadline.
func deadlineMiddleware(limit time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := WithPropagatedDeadline(r.Context(), r.Header, limit)
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}
