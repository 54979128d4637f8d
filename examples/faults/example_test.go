package faults_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"

	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/resilience"
)

// The smallest fault scenario: one of two instances answers 503; every call still succeeds
// because each retry is a fresh pick.
func Example() {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	defer bad.Close()
	inst := func(id, raw string) discovery.Instance {
		u, _ := url.Parse(raw)
		port, _ := strconv.Atoi(u.Port())
		return discovery.Instance{ID: id, Address: u.Hostname(), Port: port}
	}
	dep, _ := resilience.NewDependency("svc", resilience.DefaultConfig())
	bal, _ := lb.New("svc", discovery.NewStatic("svc", []discovery.Instance{inst("ok", ok.URL), inst("bad", bad.URL)}),
		lb.WithPolicy(lb.RoundRobin), // deterministic: a retry always lands on the other instance
		lb.WithInstancePolicy(dep))
	_ = bal.Start()
	defer bal.Close()
	client := &http.Client{Transport: dep.Wrap(lb.NewTransport(bal))}
	good := 0
	for range 20 {
		resp, err := client.Get("http://svc/")
		if err == nil {
			if resp.StatusCode == 200 {
				good++
			}
			resp.Body.Close()
		}
	}
	client.CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	fmt.Println(good, "of 20 calls succeeded")
	// Output: 20 of 20 calls succeeded
}
