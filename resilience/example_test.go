package resilience_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
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

// Rejections are typed: match them with errors.Is, read their data with errors.As.
func ExampleRejectedError() {
	b := resilience.NewBreaker(resilience.BreakerConfig{Failures: 1, Delay: time.Minute}, "10.0.0.7:8080")
	_ = b.Allow()
	b.Record(resilience.Failure)

	client := &http.Client{Transport: b.Wrap(http.DefaultTransport)}
	_, err := client.Get("http://10.0.0.7:8080/")
	var rejected *resilience.RejectedError
	fmt.Println(errors.Is(err, resilience.ErrBreakerOpen), errors.As(err, &rejected), rejected.Reason, rejected.Instance)
	// Output: true true breaker_open 10.0.0.7:8080
}
