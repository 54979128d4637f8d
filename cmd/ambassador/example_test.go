package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
)

// An ambassador forwarding /catalog/... to the instances of "catalog" (one, listed statically
// here; DISCOVERY=consul finds them in Consul), through svc.Client's chain.
func Example() {
	catalog := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "catalog saw %s %s (Host %s, prefix %s)", r.Method, r.URL.Path, r.Host, r.Header.Get("X-Forwarded-Prefix"))
	}))
	defer catalog.Close()

	env := config.MapLookup(map[string]string{
		"AMBASSADOR_ROUTES": "catalog", "DISCOVERY": "static", "DISCOVERY_STATIC_CATALOG": catalog.Listener.Addr().String(),
		"HOST": "127.0.0.1", "PORT": "0", "ADMIN_PORT": "0", "DRAIN_DELAY": "0s", "LOG_LEVEL": "error", "ACCESS_LOG": "false",
	})
	a := newAmbassador(env)
	svc, err := chassis.New("ambassador", append(a.options(), chassis.WithEnv(env), chassis.WithoutSignals(), chassis.WithLogOutput(io.Discard))...)
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := a.setup(svc); err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	<-svc.Ready()

	resp, err := http.Get("http://" + svc.Addr() + "/catalog/items/42")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body))

	stop()
	fmt.Println("stopped:", <-done)
	http.DefaultClient.CloseIdleConnections()
	// Output:
	// 200 catalog saw GET /items/42 (Host catalog, prefix /catalog)
	// stopped: <nil>
}
