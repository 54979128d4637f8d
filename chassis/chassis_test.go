package chassis_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/health"
	"github.com/cloudchassis/kit/httpx"
	"github.com/cloudchassis/kit/lifecycle"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The OTel SDK's global delegate and the HTTP client's idle connections outlive a test by design.
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// env is the base environment of in-process test services.
func env(kv ...string) config.Lookup {
	m := map[string]string{"PORT": "0", "ADMIN_PORT": "0", "GRPC_PORT": "0", "HOST": "127.0.0.1", "DRAIN_DELAY": "0s",
		"SHUTDOWN_TIMEOUT": "5s", "LOG_LEVEL": "error"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return config.MapLookup(m)
}

// start runs svc until the test ends and waits until it is ready.
func start(t *testing.T, svc *chassis.Service) {
	t.Helper()
	stop, done := runReady(t, svc)
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		http.DefaultClient.CloseIdleConnections()
	})
}

// runReady runs svc and waits until it is ready. The test stops it with stop (at the latest when it
// ends) and reads Run's result from done.
func runReady(t *testing.T, svc *chassis.Service) (stop context.CancelFunc, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch := make(chan error, 1)
	go func() { ch <- svc.Run(ctx) }()
	select {
	case <-svc.Ready():
	case err := <-ch:
		t.Fatalf("Run ended before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready after 10s")
	}
	return cancel, ch
}

func TestConfigErrorsListEverything(t *testing.T) {
	var cfg struct {
		DatabaseURL string `envconfig:"DATABASE_URL" required:"true"`
	}
	_, err := chassis.New("svc", chassis.WithEnv(env("PORT", "abc", "ADMIN_PORT", "70000")), chassis.WithConfig(&cfg))
	var ce *config.Error
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("want *config.Error with 3 problems, got %v", err)
	}
	for _, want := range []string{`PORT="abc": not an integer`, `ADMIN_PORT="70000": must be at most 65535`, "DATABASE_URL: required, not set"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// Relations between settings are checked once every value decodes.
	_, err = chassis.New("svc", chassis.WithEnv(env("DRAIN_DELAY", "40s")))
	if err == nil || !strings.Contains(err.Error(), `SHUTDOWN_TIMEOUT="5s": must be longer than DRAIN_DELAY (40s)`) {
		t.Fatalf("relation not checked: %v", err)
	}
}

func TestBadOTELVariableIsAConfigError(t *testing.T) {
	_, err := chassis.New("svc", chassis.WithEnv(env("OTEL_SDK_DISABLED", "false", "OTEL_TRACES_SAMPLER", "sometimes")))
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "OTEL_TRACES_SAMPLER") {
		t.Fatalf("want a config error naming OTEL_TRACES_SAMPLER, got %v", err)
	}
}

func TestServesRoutesAndAdmin(t *testing.T) {
	var cfg struct {
		Token config.Secret `envconfig:"API_TOKEN" default:"s3cr3t-value"`
	}
	svc, err := chassis.New("svc", chassis.WithEnv(env()), chassis.WithConfig(&cfg), chassis.WithVersion("1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleAdmin("GET /debug/custom", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "custom")
	}))
	svc.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		if chassis.RequestID(r.Context()) == "" {
			t.Error("no request id in context")
		}
		_, _ = io.WriteString(w, "item "+r.PathValue("id"))
	})
	start(t, svc)

	res, body := get(t, "http://"+svc.Addr()+"/items/7", nil)
	if res.StatusCode != 200 || body != "item 7" || res.Header.Get("X-Request-Id") == "" {
		t.Fatalf("%d %q %v", res.StatusCode, body, res.Header)
	}
	res, _ = get(t, "http://"+svc.Addr()+"/items/7", http.Header{"X-Request-Id": {"caller-id-1"}})
	if got := res.Header.Get("X-Request-Id"); got != "caller-id-1" {
		t.Fatalf("request id not echoed: %q", got)
	}
	res, _ = get(t, "http://"+svc.Addr()+"/items/7", http.Header{"X-Request-Id": {"bad id\twith control"}})
	if got := res.Header.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Fatalf("malformed request id accepted: %q", got)
	}

	admin := "http://" + svc.AdminAddr()
	for _, path := range []string{"/livez", "/readyz", "/startupz", "/metrics", "/debug/pprof/", "/debug/info", "/debug/custom"} {
		if res, body := get(t, admin+path, nil); res.StatusCode != 200 {
			t.Errorf("%s: %d %s", path, res.StatusCode, body)
		}
	}
	// Diagnostics stay off the public port.
	for _, path := range []string{"/debug/pprof/", "/metrics", "/readyz"} {
		if res, _ := get(t, "http://"+svc.Addr()+path, nil); res.StatusCode != 404 {
			t.Errorf("public %s: %d, want 404", path, res.StatusCode)
		}
	}
	_, body = get(t, admin+"/debug/info", nil)
	var info chassis.Info
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatal(err)
	}
	if info.Service != "svc" || info.Version != "1.2.3" || len(info.Routes) != 1 || len(info.Settings) == 0 {
		t.Fatalf("info: %+v", info)
	}
	if strings.Contains(body, "s3cr3t-value") || !strings.Contains(body, "API_TOKEN") {
		t.Fatalf("secret leaked or config missing in /debug/info:\n%s", body)
	}
}

func TestPanicAnswers500Problem(t *testing.T) {
	var logs bytes.Buffer
	svc, err := chassis.New("svc", chassis.WithEnv(env("LOG_LEVEL", "info")), chassis.WithLogOutput(&syncWriter{w: &logs}))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleFunc("GET /panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	start(t, svc)
	res, body := get(t, "http://"+svc.Addr()+"/panic", nil)
	if res.StatusCode != 500 || res.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(body, `"status":500`) {
		t.Fatalf("%d %s %s", res.StatusCode, res.Header.Get("Content-Type"), body)
	}
	// The service survives and keeps serving.
	if res, _ := get(t, "http://"+svc.Addr()+"/panic", nil); res.StatusCode != 500 {
		t.Fatal("second request failed")
	}
	if !strings.Contains(logs.String(), "handler panicked") {
		t.Fatalf("panic not logged:\n%s", logs.String())
	}
}

func TestLimits(t *testing.T) {
	svc, err := chassis.New("svc", chassis.WithEnv(env(
		"HTTP_READ_HEADER_TIMEOUT", "300ms", "HTTP_MAX_HEADER_BYTES", "4KiB", "HTTP_MAX_BODY_BYTES", "1KiB")))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if chassis.IsBodyTooLarge(err) {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		_, _ = w.Write(b)
	})
	start(t, svc)
	url := "http://" + svc.Addr() + "/echo"

	t.Run("oversize header gets 431", func(t *testing.T) {
		req, _ := http.NewRequest("POST", url, strings.NewReader("x"))
		req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d", res.StatusCode)
		}
	})
	t.Run("too many header fields get 431 as problem+json", func(t *testing.T) {
		// 200 distinct short names fit in the 4 KiB header limit; the default allows 100.
		for _, n := range []int{100, 200} {
			req, _ := http.NewRequest("POST", url, strings.NewReader("x"))
			for i := range n - 4 { // Host, User-Agent, Content-Length and Accept-Encoding come too
				req.Header.Set(fmt.Sprintf("X-F%d", i), "v")
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			switch {
			case n <= 100 && res.StatusCode != http.StatusOK:
				t.Fatalf("%d fields: status %d %s", n, res.StatusCode, body)
			case n > 100 && (res.StatusCode != http.StatusRequestHeaderFieldsTooLarge ||
				res.Header.Get("Content-Type") != "application/problem+json" || res.Header.Get(chassis.RequestIDHeader) == ""):
				t.Fatalf("%d fields: status %d %q %s", n, res.StatusCode, res.Header.Get("Content-Type"), body)
			}
		}
	})
	t.Run("oversize body gets 413", func(t *testing.T) {
		res, err := http.Post(url, "text/plain", strings.NewReader(strings.Repeat("b", 2048)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 413 || res.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("status %d %s", res.StatusCode, body)
		}
		// Chunked: no Content-Length, so the handler's read fails.
		res, err = http.Post(url, "text/plain", io.MultiReader(strings.NewReader(strings.Repeat("c", 2048))))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 413 {
			t.Fatalf("chunked: status %d", res.StatusCode)
		}
	})
	t.Run("slow headers are cut at the read-header timeout", func(t *testing.T) {
		conn, err := net.Dial("tcp", svc.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		req := "POST /echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("z", 100)
		sent := 0
		// One byte every 50ms: the server must hang up long before the 100+ bytes are through
		// (read-header timeout 300ms, so about 6 bytes).
		for ; sent < len(req); sent++ {
			if _, err := conn.Write([]byte{req[sent]}); err != nil {
				break
			}
			_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			var b [1]byte
			if _, err := conn.Read(b[:]); err != nil && !isTimeout(err) {
				break // closed by the server
			}
		}
		if sent >= len(req) {
			t.Fatalf("server still reading headers after %d bytes at one byte per 50ms", sent)
		}
		t.Logf("connection closed after %d header bytes", sent)
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

type fakeRegistrar struct {
	mu  sync.Mutex
	log []string
	svc *chassis.Service
}

func (f *fakeRegistrar) add(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, s)
}

func (f *fakeRegistrar) Register(context.Context) error {
	// Registration comes only after readiness.
	if rep := f.svc.Health().Check(context.Background(), health.Readiness); !rep.OK() {
		f.add("register-before-ready")
	}
	f.add("register")
	return nil
}

func (f *fakeRegistrar) Deregister(context.Context) error {
	if rep := f.svc.Health().Check(context.Background(), health.Readiness); rep.Status != health.StatusDraining {
		f.add("deregister-before-draining")
	}
	f.add("deregister")
	return nil
}

func TestStartAndStopOrder(t *testing.T) {
	reg := &fakeRegistrar{}
	svc, err := chassis.New("svc", chassis.WithEnv(env("DRAIN_DELAY", "100ms")),
		chassis.WithRegistrar(func(s *chassis.Service) (discovery.Registrar, error) {
			if s.Addr() == "" {
				return nil, errors.New("registrar built before the listener was bound")
			}
			return reg, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	reg.svc = svc
	svc.Hook(hookRecorder(reg, "db"))
	svc.Hook(hookRecorder(reg, "cache"))
	svc.OnDrain("leader", func(context.Context) error { reg.add("drain:leader"); return nil })
	checks := 0
	svc.AddCheck(health.Startup, health.Check{Name: "warm", Func: func(context.Context) error {
		checks++
		if checks < 3 {
			return errors.New("warming up")
		}
		reg.add("startup-passed")
		return nil
	}})
	cancel, done := runReady(t, svc)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := "start:db start:cache startup-passed register deregister drain:leader stop:cache stop:db"
	if got := strings.Join(reg.log, " "); got != want {
		t.Fatalf("order:\n got %s\nwant %s", got, want)
	}
}

func hookRecorder(r *fakeRegistrar, name string) lifecycleHook {
	return lifecycleHook{
		Name:  name,
		Start: func(context.Context) error { r.add("start:" + name); return nil },
		Stop:  func(context.Context) error { r.add("stop:" + name); return nil },
	}
}

func TestFailedStartStopsWhatStarted(t *testing.T) {
	var mu sync.Mutex
	var log []string
	add := func(s string) { mu.Lock(); log = append(log, s); mu.Unlock() }
	svc, err := chassis.New("svc", chassis.WithEnv(env()))
	if err != nil {
		t.Fatal(err)
	}
	svc.Hook(lifecycleHook{Name: "db", Start: func(context.Context) error { add("start:db"); return nil }, Stop: func(context.Context) error { add("stop:db"); return nil }})
	boom := errors.New("cache unreachable")
	svc.Hook(lifecycleHook{Name: "cache", Start: func(context.Context) error { return boom }, Stop: func(context.Context) error { add("stop:cache"); return nil }})
	err = svc.Run(context.Background())
	if !errors.Is(err, boom) {
		t.Fatalf("Run = %v", err)
	}
	if got := strings.Join(log, " "); got != "start:db stop:db" {
		t.Fatalf("got %s", got)
	}
	if err := svc.Run(context.Background()); !errors.Is(err, lifecycle.ErrAlreadyRun) {
		t.Fatalf("second Run: %v", err)
	}
}

func TestHelpAndExitCodes(t *testing.T) {
	var cfg struct {
		DatabaseURL string `envconfig:"DATABASE_URL" required:"true" desc:"database URL"`
	}
	var out bytes.Buffer
	if err := chassis.WriteEnvReference(&out, chassis.WithConfig(&cfg)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"PORT", "DRAIN_DELAY", "SHUTDOWN_TIMEOUT", "DATABASE_URL", "database URL"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("reference lacks %s:\n%s", want, out.String())
		}
	}
}

func get(t *testing.T, url string, h http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestBindHonoursMaxBodyBytes: httpx.Bind reads as far as HTTP_MAX_BODY_BYTES allows, no further
// and no less (it once capped every body at 1 MiB of its own, and read the variable as an integer).
func TestBindHonoursMaxBodyBytes(t *testing.T) {
	body := `{"s":"` + strings.Repeat("a", 2<<20) + `"}`
	for _, tc := range []struct {
		limit   string
		chunked bool
		want    int
	}{
		{"10MiB", false, http.StatusOK},
		{"10MiB", true, http.StatusOK},
		{"1MiB", false, http.StatusRequestEntityTooLarge},
		{"1MiB", true, http.StatusRequestEntityTooLarge},
	} {
		t.Run(fmt.Sprintf("%s chunked=%v", tc.limit, tc.chunked), func(t *testing.T) {
			svc, err := chassis.New("svc", chassis.WithEnv(env("HTTP_MAX_BODY_BYTES", tc.limit)))
			if err != nil {
				t.Fatal(err)
			}
			svc.HandleFunc("POST /bind", func(w http.ResponseWriter, r *http.Request) {
				var in struct {
					S string `json:"s"`
				}
				if httpx.Bind(w, r, &in) {
					_, _ = fmt.Fprint(w, len(in.S))
				}
			})
			start(t, svc)
			var rd io.Reader = strings.NewReader(body)
			if tc.chunked {
				rd = io.MultiReader(rd) // no length known: sent chunked
			}
			res, err := http.Post("http://"+svc.Addr()+"/bind", "application/json", rd)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tc.want, got)
			}
			if tc.want == http.StatusOK && string(got) != fmt.Sprint(2<<20) {
				t.Fatalf("decoded %s bytes", got)
			}
		})
	}
}

// TestHandlerWriterKeepsReadFrom: the ResponseWriter a handler gets keeps io.ReaderFrom through every
// default middleware, so that io.Copy(w, body) (a gateway copying a response) uses net/http's pooled
// buffer or sendfile instead of allocating 32 KiB per call, and keeps Flusher and Hijacker.
func TestHandlerWriterKeepsReadFrom(t *testing.T) {
	svc, err := chassis.New("svc", chassis.WithEnv(env()))
	if err != nil {
		t.Fatal(err)
	}
	type seen struct{ readerFrom, flusher, hijacker bool }
	got := make(chan seen, 1)
	svc.HandleFunc("GET /copy", func(w http.ResponseWriter, r *http.Request) {
		_, rf := w.(io.ReaderFrom)
		_, fl := w.(http.Flusher)
		_, hj := w.(http.Hijacker)
		got <- seen{rf, fl, hj}
		w.Header().Set("Content-Type", "text/plain")
		// A reader with no WriteTo, as a client response body is: io.Copy must find w's ReadFrom.
		_, _ = io.Copy(w, io.LimitReader(strings.NewReader(strings.Repeat("x", 100_000)), 100_000))
	})
	start(t, svc)
	res, err := http.Get("http://" + svc.Addr() + "/copy")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if s := <-got; !s.readerFrom || !s.flusher || !s.hijacker {
		t.Errorf("handler's writer: io.ReaderFrom %v, http.Flusher %v, http.Hijacker %v; want all", s.readerFrom, s.flusher, s.hijacker)
	}
	if res.StatusCode != http.StatusOK || len(b) != 100_000 {
		t.Errorf("status %d, %d bytes; want 200, 100000", res.StatusCode, len(b))
	}
}
