package chassistest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/chassistest"
)

type greeterConfig struct {
	Greeting string `envconfig:"GREETING" default:"Hello" desc:"word used to greet"`
}

// greeter is a setup function, the kind main passes to chassis.Main.
func greeter(cfg *greeterConfig) func(*chassis.Service) error {
	return func(svc *chassis.Service) error {
		svc.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
			svc.LoggerFor(r.Context()).Info("greeting")
			fmt.Fprintf(w, "%s, %s!", cfg.Greeting, r.PathValue("name"))
		})
		return nil
	}
}

func TestStartServesWithEnvAndRecordsTelemetry(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts []chassistest.Option
	}{{"sockets", nil}, {"memory", []chassistest.Option{chassistest.InMemory()}}} {
		t.Run(mode.name, func(t *testing.T) {
			var cfg greeterConfig
			inst := chassistest.Start(t, "greeter", greeter(&cfg), append(mode.opts,
				chassistest.WithConfig(&cfg), chassistest.WithEnv(map[string]string{"GREETING": "Hi"}))...)

			res, body := inst.Get(t, "/hello/gopher")
			if res.StatusCode != 200 || body != "Hi, gopher!" {
				t.Fatalf("got %d %q", res.StatusCode, body)
			}
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("content type %q, want sniffed text/plain", ct)
			}
			if res.Header.Get(chassis.RequestIDHeader) == "" {
				t.Error("no request id: the chassis middleware did not run")
			}
			inst.AssertSpan(t, "GET /hello/{name}", attribute.Int("http.response.status_code", 200))
			if n := inst.ServerRequests(t, "/hello/{name}"); n != 1 {
				t.Errorf("ServerRequests = %d, want 1", n)
			}
			if n := inst.ServerRequests(t, "/hello/{name}", attribute.Int("http.response.status_code", 500)); n != 0 {
				t.Errorf("ServerRequests{500} = %d, want 0", n)
			}
			if n := inst.Logs().FilterMessage("greeting").Len(); n != 1 {
				t.Errorf("greeting logged %d times", n)
			}
			if e := inst.Logs().FilterMessage("greeting").All(); len(e) == 1 && e[0].ContextMap()["trace_id"] == nil {
				t.Error("handler log has no trace_id")
			}
			// Health stays on the admin port, over loopback, in both modes.
			ready, err := http.Get(inst.AdminURL("/readyz"))
			if err != nil {
				t.Fatal(err)
			}
			ready.Body.Close()
			http.DefaultClient.CloseIdleConnections()
			if ready.StatusCode != 200 {
				t.Fatalf("readyz %d", ready.StatusCode)
			}
		})
	}
}

func TestStartFailsOnBadConfig(t *testing.T) {
	ft := &fakeTB{TB: t}
	var cfg struct {
		Limit int `envconfig:"LIMIT" validate:"min=1"`
	}
	done := make(chan struct{})
	go func() { // Fatalf ends the goroutine, as it ends a test
		defer close(done)
		chassistest.Start(ft, "svc", nil, chassistest.WithConfig(&cfg), chassistest.WithEnv(map[string]string{"LIMIT": "x"}))
	}()
	<-done
	ft.runCleanups()
	if !ft.fatal || !strings.Contains(ft.msgs(), `LIMIT="x"`) {
		t.Fatalf("want a fatal naming LIMIT, got %q", ft.msgs())
	}
}

func TestStopDeregistersAndDrains(t *testing.T) {
	c := chassistest.NewCluster(t)
	a := c.Start("pricing", nil)
	b := c.Start("pricing", nil)
	if n := len(c.Registry().Instances("pricing")); n != 2 {
		t.Fatalf("%d instances registered, want 2", n)
	}
	a.Stop(t)
	a.Stop(t) // idempotent
	if got := c.Registry().Instances("pricing"); len(got) != 1 || got[0].HostPort() != b.Addr() {
		t.Fatalf("after Stop: %v, want only %s", got, b.Addr())
	}
	if got := c.Instances("pricing"); len(got) != 1 || got[0] != b {
		t.Fatalf("Instances: %v", got)
	}
}

func TestSetupError(t *testing.T) {
	ft := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		chassistest.Start(ft, "svc", func(*chassis.Service) error { return errors.New("no database") })
	}()
	<-done
	ft.runCleanups()
	if !ft.fatal || !strings.Contains(ft.msgs(), "setup: no database") {
		t.Fatalf("got %q", ft.msgs())
	}
}

func TestLeakedGoroutineFailsTheTest(t *testing.T) {
	ft := &fakeTB{TB: t}
	release := make(chan struct{})
	chassistest.Start(ft, "leaky", func(svc *chassis.Service) error {
		go func() { <-release }() // started by the service, never stopped by it
		return nil
	})
	ft.runCleanups()
	close(release)
	if !strings.Contains(ft.msgs(), "found unexpected goroutines") {
		t.Fatalf("leak not reported: %q", ft.msgs())
	}
}

// fakeTB records failures, so that the helpers' failure paths can be tested; Fatal ends the
// goroutine as in a real test.
type fakeTB struct {
	testing.TB
	errs     []string
	fatal    bool
	cleanups []func()
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Errorf(format string, a ...any) {
	f.errs = append(f.errs, fmt.Sprintf(format, a...))
}
func (f *fakeTB) Error(a ...any) { f.errs = append(f.errs, fmt.Sprint(a...)) }
func (f *fakeTB) Fatalf(format string, a ...any) {
	f.errs = append(f.errs, fmt.Sprintf(format, a...))
	f.fatal = true
	runtimeGoexit()
}
func (f *fakeTB) Failed() bool        { return len(f.errs) > 0 }
func (f *fakeTB) Logf(string, ...any) {}
func (f *fakeTB) Cleanup(fn func())   { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) msgs() string        { return strings.Join(f.errs, "\n") }
func (f *fakeTB) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// get is a plain GET with a context, for tests that call a URL directly.
func get(t *testing.T, ctx context.Context, c *http.Client, url string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, string(b), err
}

var _ = time.Second
