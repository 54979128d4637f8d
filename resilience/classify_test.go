package resilience

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"

	"github.com/cloudchassis/kit/resilience/policy"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// classRow is one line of the table of defaults in docs/resilience.md.
type classRow struct {
	name   string
	status int
	err    error
	want   discovery.Class
}

var classTable = []classRow{
	{"200", 200, nil, discovery.Class{}},
	{"404", 404, nil, discovery.Class{}},
	{"429", 429, nil, discovery.Class{Retryable: true}},
	{"500", 500, nil, discovery.Class{Failure: true}},
	{"501", 501, nil, discovery.Class{}},
	{"502", 502, nil, discovery.Class{Retryable: true, Failure: true}},
	{"503", 503, nil, discovery.Class{Retryable: true, Failure: true}},
	{"504", 504, nil, discovery.Class{Retryable: true, Failure: true}},
	{"505", 505, nil, discovery.Class{Failure: true}},
	{"refused", 0, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, discovery.Class{Retryable: true, Failure: true, Unsent: true}},
	{"reset", 0, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, discovery.Class{Retryable: true, Failure: true}},
	{"eof", 0, io.ErrUnexpectedEOF, discovery.Class{Retryable: true, Failure: true}},
	{"deadline", 0, context.DeadlineExceeded, discovery.Class{Retryable: true, Failure: true}},
	{"attempt timeout", 0, &RejectedError{Reason: semconv.ReasonTimeout}, discovery.Class{Retryable: true, Failure: true}},
	{"breaker open", 0, &RejectedError{Reason: semconv.ReasonBreakerOpen, Instance: "a"}, discovery.Class{Retryable: true, Unsent: true, Local: true}},
	{"bulkhead full", 0, &RejectedError{Reason: semconv.ReasonBulkheadFull}, discovery.Class{Unsent: true, Local: true}},
	{"deadline too short", 0, &RejectedError{Reason: semconv.ReasonDeadlineTooShort}, discovery.Class{Unsent: true, Local: true}},
	{"canceled", 0, context.Canceled, discovery.Class{}},
	{"other error", 0, errors.New("boom"), discovery.Class{Failure: true}},
}

// answer returns row's result for req.
func (r classRow) answer(req *http.Request) (*http.Response, error) {
	if r.err != nil {
		return nil, r.err
	}
	return &http.Response{StatusCode: r.status, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("x")), Request: req}, nil
}

// Every policy (retry, hedge, fallback, instance breaker, dependency breaker, outlier ejection) acts
// as the table says, for every row.
func TestPoliciesAgreeWithTable(t *testing.T) {
	for _, row := range classTable {
		t.Run(row.name, func(t *testing.T) {
			var resp *http.Response
			if row.err == nil {
				resp = &http.Response{StatusCode: row.status}
			}
			if got := discovery.Classify(resp, row.err); got != row.want {
				t.Fatalf("Classify = %+v, want %+v", got, row.want)
			}
			checkPolicies(t, row, nil)
		})
	}
}

// A user classifier changes every policy at once: 418 becomes a retryable failure, 503 nothing.
func TestClassifierChangesEveryPolicy(t *testing.T) {
	teapot := func(resp *http.Response, err error) discovery.Class {
		switch {
		case resp != nil && resp.StatusCode == http.StatusTeapot:
			return discovery.Class{Retryable: true, Failure: true}
		case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
			return discovery.Class{}
		}
		return discovery.Classify(resp, err)
	}
	checkPolicies(t, classRow{"418", 418, nil, discovery.Class{Retryable: true, Failure: true}}, teapot)
	checkPolicies(t, classRow{"503", 503, nil, discovery.Class{}}, teapot)
}

// RETRY_ON decides Retryable for sent attempts; unsent ones are always retried.
func TestRetryOn(t *testing.T) {
	on, err := parseRetryOn(" 409, 5xx,timeout ")
	if err != nil {
		t.Fatal(err)
	}
	c := on.wrap(discovery.Classify)
	for _, tc := range []struct {
		row  classRow
		want bool
	}{
		{classRow{status: 409}, true}, {classRow{status: 501}, true}, {classRow{status: 429}, false},
		{classRow{err: context.DeadlineExceeded}, true}, {classRow{err: io.ErrUnexpectedEOF}, false},
		{classRow{err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}, true},
		{classRow{err: &RejectedError{Reason: semconv.ReasonBreakerOpen}}, true},
		{classRow{err: errors.New("boom")}, false},
	} {
		resp, err := tc.row.answer(nil)
		if got := c(resp, err).Retryable; got != tc.want {
			t.Errorf("%d %v: Retryable = %v, want %v", tc.row.status, tc.row.err, got, tc.want)
		}
	}
	for _, bad := range []string{"50x", "600", "099", "connect", "5XX,abc"} {
		_, err := parseRetryOn(bad)
		if err == nil || !strings.Contains(err.Error(), "RETRY_ON=") || !strings.Contains(err.Error(), "connection, timeout") {
			t.Errorf("RETRY_ON=%q: error %v", bad, err)
		}
	}
	cfg := DefaultConfig()
	cfg.RetryOn = "5O3"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), `"5o3"`) {
		t.Errorf("Validate: %v", err)
	}
}

// checkPolicies runs row through each policy built with classify (nil: the default) and checks it
// acts on row.want.
func checkPolicies(t *testing.T, row classRow, classify discovery.Classifier) {
	t.Helper()
	c := row.want
	var opts []Option
	if classify != nil {
		opts = append(opts, WithClassifier(classify))
	}
	stub := roundTripperFunc(row.answer)
	get := func(rt http.RoundTripper) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://svc/x", nil)
		resp, err := rt.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}

	// Retry: a second attempt iff Retryable.
	var n atomic.Int32
	_, _ = get(retryPolicy(retryConfig{MaxAttempts: 2}, nil, opts...)(roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		n.Add(1)
		return row.answer(req)
	})))
	if got := n.Load() == 2; got != c.Retryable {
		t.Errorf("%s: retried = %v, want %v", row.name, got, c.Retryable)
	}

	// Hedge: the first attempt's answer stands iff it is a response that is not Retryable.
	synctest.Test(t, func(t *testing.T) {
		var k atomic.Int32
		rt := hedgePolicy(hedgeConfig{Delay: 5 * time.Millisecond}, nil, opts...)(roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			if k.Add(1) == 1 {
				time.Sleep(10 * time.Millisecond)
				resp, err := row.answer(req)
				if resp != nil {
					resp.Header.Set("Attempt", "1")
				}
				return resp, err
			}
			time.Sleep(30 * time.Millisecond)
			return &http.Response{StatusCode: 200, Header: http.Header{"Attempt": {"2"}}, Body: http.NoBody, Request: req}, nil
		}))
		resp, err := get(rt)
		first := err == nil && resp.Header.Get("Attempt") == "1"
		if want := row.err == nil && !c.Retryable; first != want {
			t.Errorf("%s: hedge kept the first answer = %v, want %v", row.name, first, want)
		}
	})

	// Fallback: called iff the call failed.
	called := false
	_, _ = get(Fallback(func(req *http.Request, _ int, _ error) (*http.Response, error) {
		called = true
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: req}, nil
	}, opts...)(stub))
	if want := row.err != nil || c.Retryable || c.Failure; called != want {
		t.Errorf("%s: fallback called = %v, want %v", row.name, called, want)
	}

	failure := c.Failure && !c.Local

	// Instance breaker: opens on one failure.
	b := newTestBreaker(policy.BreakerConfig{Failures: 1, Delay: time.Hour}, "a", opts...)
	_, _ = get(b.Wrap(stub))
	if got := !b.Available(); got != failure {
		t.Errorf("%s: instance breaker open = %v, want %v", row.name, got, failure)
	}

	// Dependency breaker: opens on one failure out of one call.
	cfg := DefaultConfig()
	cfg.Retries, cfg.Timeout, cfg.DependencyBreakerMinCalls, cfg.BreakerDelay = 0, 0, 1, time.Hour
	d, err := NewDependency("svc", cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = get(d.Wrap(stub))
	if got := !d.breaker.Available(); got != failure {
		t.Errorf("%s: dependency breaker open = %v, want %v", row.name, got, failure)
	}

	// Outlier ejection (the balancer given the dependency's classifier): ejects on one failure.
	out := lb.DefaultOutlier()
	out.ConsecutiveFailures, out.MaxEjectionPercent, out.PanicPercent = 1, 100, 0
	bal, err := lb.NewFixed("svc", []discovery.Instance{{ID: "a", Address: "10.0.0.1", Port: 80}},
		lb.WithBaseTransport(stub), lb.WithOutlier(out), lb.WithClassifier(d.Classify))
	if err != nil {
		t.Fatal(err)
	}
	defer bal.Close()
	_, _ = get(lb.NewTransport(bal))
	e, err := bal.Pick(context.Background())
	if err == nil {
		e.Release()
	}
	if got := errors.Is(err, lb.ErrNoInstances); got != failure {
		t.Errorf("%s: instance ejected = %v, want %v", row.name, got, failure)
	}

}
