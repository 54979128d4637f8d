package lb_test

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
	"time"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
)

// Pick an instance for each call and report how the call went.
func Example() {
	b, err := lb.NewFixed("pricing", []discovery.Instance{
		{ID: "a", Address: "10.0.0.1", Port: 8080},
		{ID: "b", Address: "10.0.0.2", Port: 8080, Weight: 2},
	}, lb.WithPolicy(lb.RoundRobin))
	if err != nil {
		panic(err)
	}
	defer b.Close()
	var ids []string
	for range 6 {
		e, err := b.Pick(context.Background())
		if err != nil {
			panic(err)
		}
		ids = append(ids, e.Instance().ID)
		e.Done(3*time.Millisecond, nil) // the call's latency and error
	}
	fmt.Println(strings.Join(ids, " "))

	empty, _ := lb.NewFixed("cart", nil)
	defer empty.Close()
	_, err = empty.Pick(context.Background())
	fmt.Println(errors.Is(err, lb.ErrNoInstances), err)
	// Output:
	// b a b b a b
	// true lb: service "cart": no instances available: service has no instances (0 known)
}

// Send http://<service>/... requests through the balancer.
func ExampleTransport() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host %s, path %s", r.Host, r.URL.Path)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	port, _ := strconv.Atoi(u.Port())

	b, err := lb.NewFixed("pricing", []discovery.Instance{{ID: "p1", Address: u.Hostname(), Port: port}})
	if err != nil {
		panic(err)
	}
	defer b.Close()
	client := &http.Client{Transport: lb.NewTransport(b)}
	resp, err := client.Get("http://pricing/prices/42")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: host pricing, path /prices/42
}

// Route calls for the same key to the same instance.
func ExampleWithHashKey() {
	b, _ := lb.NewFixed("carts", []discovery.Instance{
		{ID: "c1", Address: "10.0.0.1", Port: 80},
		{ID: "c2", Address: "10.0.0.2", Port: 80},
		{ID: "c3", Address: "10.0.0.3", Port: 80},
	}, lb.WithPolicy(lb.RingHash))
	defer b.Close()
	ctx := lb.WithHashKey(context.Background(), "user-1234")
	first, _ := b.Pick(ctx)
	first.Release()
	same := true
	for range 100 {
		e, _ := b.Pick(ctx)
		same = same && e == first
		e.Release()
	}
	fmt.Println("always the same instance:", same)
	// Output: always the same instance: true
}
