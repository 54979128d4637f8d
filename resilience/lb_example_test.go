package resilience_test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/resilience"
)

// The whole client chain around discovery/lb: instance "a" refuses connections, so each call's first
// attempt fails on it, the retry re-picks "b", and after BREAKER_FAILURES failures a's breaker opens
// and the balancer stops picking it.
func ExampleDependency() {
	var mu sync.Mutex
	var sent []string
	backend := roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		sent = append(sent, r.URL.Host)
		mu.Unlock()
		if r.URL.Host == "10.0.0.1:80" {
			return nil, fmt.Errorf("dial: %w", io.ErrUnexpectedEOF) // a broken instance
		}
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("ok")), Request: r}, nil
	})

	cfg := resilience.DefaultConfig()
	cfg.BreakerFailures = 2
	cfg.RetryBaseDelay = 0
	dep, err := resilience.NewDependency("pricing", cfg)
	if err != nil {
		panic(err)
	}
	bal, err := lb.NewFixed("pricing", []discovery.Instance{
		{ID: "a", Address: "10.0.0.1", Port: 80},
		{ID: "b", Address: "10.0.0.2", Port: 80},
	},
		lb.WithPolicy(lb.RoundRobin),
		lb.WithBaseTransport(backend),
		lb.WithInstancePolicy(dep))
	if err != nil {
		panic(err)
	}
	defer bal.Close()
	client := &http.Client{Transport: dep.Wrap(lb.NewTransport(bal))}

	var codes []string
	for range 4 {
		resp, err := client.Get("http://pricing/prices/42")
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		codes = append(codes, strconv.Itoa(resp.StatusCode))
	}
	fmt.Println(strings.Join(codes, " "))
	fmt.Println(strings.Join(sent, " "))
	// Output:
	// 200 200 200 200
	// 10.0.0.1:80 10.0.0.2:80 10.0.0.1:80 10.0.0.2:80 10.0.0.2:80 10.0.0.2:80
}
