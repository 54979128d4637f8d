package resilience_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudchassis/kit/resilience"
)

// A dependency that fails twice with 503 and then answers: the client retries (GET is idempotent)
// and the caller sees only the success.
func ExampleNewTransport() {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok, deadline header %t", r.Header.Get(resilience.TimeoutHeader) != "")
	}))
	defer srv.Close()

	cfg := resilience.DefaultConfig()
	cfg.RetryBaseDelay = time.Millisecond
	rt, err := resilience.NewTransport(http.DefaultTransport, "pricing", cfg)
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: rt}
	resp, err := client.Get(srv.URL)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	var body [64]byte
	n, _ := resp.Body.Read(body[:])
	fmt.Println(resp.StatusCode, string(body[:n]), "after", calls.Load(), "attempts")
	// Output: 200 ok, deadline header true after 3 attempts
}

// Rejections are typed: match them with errors.Is, read their data with errors.As. Here an
// instance refuses connections, which opens its breaker at once.
func ExampleRejectedError() {
	cfg := resilience.DefaultConfig()
	cfg.Retries, cfg.DependencyBreakerRate = 0, 0
	dep, err := resilience.NewDependency("pricing", cfg)
	if err != nil {
		panic(err)
	}
	refused := roundTripperFunc(func(*http.Request) (*http.Response, error) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	})
	client := &http.Client{Transport: dep.Wrap(dep.Instance("10.0.0.7:8080", refused))}
	_, _ = client.Get("http://10.0.0.7:8080/")
	_, err = client.Get("http://10.0.0.7:8080/")
	var rejected *resilience.RejectedError
	fmt.Println(errors.Is(err, resilience.ErrBreakerOpen), errors.As(err, &rejected), rejected.Reason, rejected.Instance)
	// Output: true true breaker_open 10.0.0.7:8080
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
