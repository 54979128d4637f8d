package main

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Idle connections of the test's own plain clients outlive a test by design.
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// testEnv is the base environment of in-process ambassadors, with kv added.
func testEnv(kv ...string) map[string]string {
	m := map[string]string{"PORT": "0", "ADMIN_PORT": "0", "HOST": "127.0.0.1", "DRAIN_DELAY": "0s",
		"SHUTDOWN_TIMEOUT": "5s", "LOG_LEVEL": "error", "ACCESS_LOG": "false", "DISCOVERY": "static"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// running is an ambassador running in process.
type running struct {
	a    *ambassador
	svc  *chassis.Service
	url  string // http://<public address>
	stop func() error
}

// newService builds an ambassador's service from env (not started).
func newService(t *testing.T, env map[string]string) (*ambassador, *chassis.Service, error) {
	t.Helper()
	lookup := config.MapLookup(env)
	a := newAmbassador(lookup)
	svc, err := chassis.New("ambassador", append(a.options(),
		chassis.WithEnv(lookup), chassis.WithoutSignals(), chassis.WithLogOutput(io.Discard))...)
	if err != nil {
		return nil, nil, err
	}
	return a, svc, a.setup(svc)
}

// startAmbassador runs an ambassador until the test ends (or stop), and waits until it is ready.
func startAmbassador(t *testing.T, env map[string]string) *running {
	t.Helper()
	a, svc, err := newService(t, env)
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	select {
	case <-svc.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("Run ended before ready: %v", err)
	case <-time.After(15 * time.Second):
		cancel()
		t.Fatal("not ready after 15s")
	}
	var stopped bool
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			runErr = <-done
		}
		return runErr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		http.DefaultClient.CloseIdleConnections()
	})
	return &running{a: a, svc: svc, url: "http://" + svc.Addr(), stop: stop}
}
