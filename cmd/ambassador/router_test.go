package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/problem"
	"github.com/cloudchassis/kit/resilience"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// echoed is what the echo backend saw.
type echoed struct {
	Path, RawQuery, Host     string
	XFF, XFHost, XFProto     string
	XFPrefix, Hop, Conn, Via string
}

func echoBackend(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(echoed{
			Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host,
			XFF: r.Header.Get("X-Forwarded-For"), XFHost: r.Header.Get("X-Forwarded-Host"),
			XFProto: r.Header.Get("X-Forwarded-Proto"), XFPrefix: r.Header.Get("X-Forwarded-Prefix"),
			Hop: r.Header.Get("X-Hop"), Conn: r.Header.Get("Connection"),
		})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func getEcho(t *testing.T, url string, header ...string) echoed {
	t.Helper()
	resp, body := get(t, url, header...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	var e echoed
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, body)
	}
	return e
}

// wantProblem checks a problem+json answer with status and a detail containing want.
func wantProblem(t *testing.T, resp *http.Response, body []byte, status int, want string) {
	t.Helper()
	var p problem.Details
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != problem.ContentType ||
		json.Unmarshal(body, &p) != nil || !strings.Contains(p.Detail, want) {
		t.Fatalf("want %d problem+json with %q, got %d %s: %s", status, want, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}

func TestPathRoutingStripsThePrefixAndSetsForwardedHeaders(t *testing.T) {
	b := echoBackend(t)
	amb := startAmbassador(t, testEnv("AMBASSADOR_ROUTES", "echo,other", "DISCOVERY_STATIC_ECHO", b.Listener.Addr().String(),
		"DISCOVERY_STATIC_OTHER", "127.0.0.1:1"))
	e := getEcho(t, amb.url+"/echo/items/a%2Fb?x=1&y=2", "X-Forwarded-For", "10.1.2.3", "Connection", "X-Hop", "X-Hop", "secret")
	host := strings.TrimPrefix(amb.url, "http://")
	want := echoed{Path: "/items/a/b", RawQuery: "x=1&y=2", Host: "echo", XFF: "10.1.2.3, 127.0.0.1",
		XFHost: host, XFProto: "http", XFPrefix: "/echo"}
	if e != want {
		t.Errorf("backend saw\n%+v\nwant\n%+v", e, want)
	}
	if e := getEcho(t, amb.url+"/echo"); e.Path != "/" {
		t.Errorf("/echo reached %q, want /", e.Path)
	}
	if e := getEcho(t, amb.url+"/echo/"); e.Path != "/" {
		t.Errorf("/echo/ reached %q, want /", e.Path)
	}
}

func TestHostRouting(t *testing.T) {
	b := echoBackend(t)
	amb := startAmbassador(t, testEnv("AMBASSADOR_ROUTES", "echo", "DISCOVERY_STATIC_ECHO", b.Listener.Addr().String(),
		"AMBASSADOR_HOST_SUFFIX", "svc.local"))
	for _, host := range []string{"echo", "echo:8080", "echo.svc.local", "echo.svc.local:80"} {
		e := getEcho(t, amb.url+"/echo/x?q=1", "Host", host)
		if e.Path != "/echo/x" || e.RawQuery != "q=1" || e.XFPrefix != "" || e.Host != "echo" {
			t.Errorf("Host %s: backend saw %+v, want the path unchanged and no prefix", host, e)
		}
	}
	// A suffix names a service, but only an allowed one.
	resp, body := get(t, amb.url+"/x", "Host", "other.svc.local")
	wantProblem(t, resp, body, http.StatusNotFound, `no route to "other"`)
}

func TestUnknownServicesGet404(t *testing.T) {
	b := echoBackend(t)
	amb := startAmbassador(t, testEnv("AMBASSADOR_ROUTES", "echo", "DISCOVERY_STATIC_ECHO", b.Listener.Addr().String()))
	resp, body := get(t, amb.url+"/pricing/x")
	wantProblem(t, resp, body, http.StatusNotFound, `no route to "pricing": AMBASSADOR_ROUTES allows echo`)
	resp, body = get(t, amb.url+"/")
	wantProblem(t, resp, body, http.StatusNotFound, "call /<service>/<path>")
	if n := len(amb.a.router.dynamic); n != 0 {
		t.Errorf("%d clients created for unknown services", n)
	}
}

func TestWildcardCreatesClientsOnlyForKnownServicesUpToTheCap(t *testing.T) {
	b := echoBackend(t)
	addr := b.Listener.Addr().String()
	amb := startAmbassador(t, testEnv("AMBASSADOR_ROUTES", "*", "AMBASSADOR_MAX_SERVICES", "2", "AMBASSADOR_HOST_SUFFIX", "svc.local",
		"DISCOVERY_STATIC_ECHO", addr, "DISCOVERY_STATIC_ECHO_2", addr, "DISCOVERY_STATIC_THIRD", addr))
	// An attacker's names: each a 404, none a client or a watch.
	for i := range 200 {
		resp, body := get(t, fmt.Sprintf("%s/svc-%d/x", amb.url, i))
		wantProblem(t, resp, body, http.StatusNotFound, "discovery knows no such service")
	}
	// Other spellings of a static service's variable name are not the service: each would take a
	// slot of its own.
	for _, alias := range []string{"ECHO", "Echo", "echo_2", "echo.2"} {
		resp, body := get(t, amb.url+"/"+alias+"/x")
		wantProblem(t, resp, body, http.StatusNotFound, "discovery knows no such service")
	}
	resp, body := get(t, amb.url+"/a%20b/x")
	wantProblem(t, resp, body, http.StatusNotFound, "not a service name")
	if n := len(amb.a.router.dynamic); n != 0 {
		t.Fatalf("%d clients created for unknown services", n)
	}
	if e := getEcho(t, amb.url+"/echo/x"); e.Path != "/x" || e.Host != "echo" {
		t.Errorf("echo: backend saw %+v", e)
	}
	if e := getEcho(t, amb.url+"/echo-2/y"); e.Path != "/y" || e.Host != "echo-2" {
		t.Errorf("echo-2: backend saw %+v", e)
	}
	if e := getEcho(t, amb.url+"/y", "Host", "echo-2.svc.local"); e.Path != "/y" || e.Host != "echo-2" || e.XFPrefix != "" {
		t.Errorf("Host echo-2.svc.local: backend saw %+v", e)
	}
	resp, body = get(t, amb.url+"/y", "Host", "nosuch.svc.local")
	wantProblem(t, resp, body, http.StatusNotFound, `no route to "nosuch"`)
	resp, body = get(t, amb.url+"/third/z")
	wantProblem(t, resp, body, http.StatusServiceUnavailable, "AMBASSADOR_MAX_SERVICES (2)")
	if n := len(amb.a.router.dynamic); n != 2 {
		t.Errorf("%d clients, want 2", n)
	}
}

func TestCachedCatalogFetchesAtMostOncePerRefresh(t *testing.T) {
	now := time.Unix(1000, 0)
	var fetches int
	var fail error
	c := newCachedCatalog(func(context.Context) ([]string, error) {
		fetches++
		return []string{"a", "b"}, fail
	}, 2*time.Second, func() time.Time { return now })
	ctx := context.Background()
	for _, s := range []string{"a", "b", "zz", "yy", "a"} {
		got, err := c.Has(ctx, s)
		if err != nil || got != (s == "a" || s == "b") {
			t.Fatalf("Has(%q) = %v, %v", s, got, err)
		}
	}
	if fetches != 1 {
		t.Fatalf("%d fetches within the refresh, want 1", fetches)
	}
	now = now.Add(2 * time.Second)
	if ok, _ := c.Has(ctx, "a"); !ok || fetches != 1 {
		t.Fatalf("a known name fetched again (%d fetches)", fetches)
	}
	if ok, _ := c.Has(ctx, "zz"); ok || fetches != 2 {
		t.Fatalf("an unknown name after the refresh: %v, %d fetches, want false and 2", ok, fetches)
	}
	now = now.Add(2 * time.Second)
	fail = errors.New("no agent")
	if _, err := c.Has(ctx, "zz"); !errors.Is(err, fail) {
		t.Fatalf("a failed fetch: %v", err)
	}
}

func TestErrorStatus(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	bg := context.Background()
	for _, c := range []struct {
		ctx  context.Context
		err  error
		want int
	}{
		{bg, fmt.Errorf("pick: %w", lb.ErrNoInstances), http.StatusServiceUnavailable},
		{bg, &resilience.RejectedError{Reason: semconv.ReasonBreakerOpen}, http.StatusServiceUnavailable},
		{bg, &resilience.RejectedError{Reason: semconv.ReasonBulkheadFull}, http.StatusServiceUnavailable},
		{bg, &resilience.RejectedError{Reason: semconv.ReasonTimeout}, http.StatusGatewayTimeout},
		{bg, errors.Join(errors.New("dial tcp: connection refused"), resilience.ErrBudgetExhausted), http.StatusBadGateway},
		{canceled, context.Canceled, StatusClientClosed},
	} {
		if got := errorStatus(c.ctx, c.err); got != c.want {
			t.Errorf("errorStatus(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

func TestFailuresAreProblems(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	t.Cleanup(slow.Close)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there now: connections are refused
	amb := startAmbassador(t, testEnv("AMBASSADOR_ROUTES", "slow,dead",
		"DISCOVERY_STATIC_SLOW", slow.Listener.Addr().String(), "CLIENT_SLOW_TIMEOUT", "300ms", "CLIENT_SLOW_ATTEMPT_TIMEOUT", "100ms",
		"DISCOVERY_STATIC_DEAD", deadAddr))
	resp, body := get(t, amb.url+"/slow/x")
	wantProblem(t, resp, body, http.StatusGatewayTimeout, "slow: ")
	resp, body = get(t, amb.url+"/dead/x")
	if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a refused connection: %d %s, want 502 or 503", resp.StatusCode, body)
	}
	wantProblem(t, resp, body, resp.StatusCode, "dead: ")
}

// TestRequestBodiesAreReplayedOnRetry: a PUT whose first attempt lands on an instance that
// answers 503 is retried on the other with the same body.
func TestRequestBodiesAreReplayedOnRetry(t *testing.T) {
	var bad, good atomic.Int64
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bad.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(failing.Close)
	hashing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		good.Add(1)
		h := sha256.New()
		_, _ = io.Copy(h, r.Body)
		fmt.Fprintf(w, "%x", h.Sum(nil))
	}))
	t.Cleanup(hashing.Close)
	amb := startAmbassador(t, testEnv("AMBASSADOR_ROUTES", "store", "CLIENT_STORE_RETRIES", "3",
		"DISCOVERY_STATIC_STORE", failing.Listener.Addr().String()+","+hashing.Listener.Addr().String()))
	payload := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	want := fmt.Sprintf("%x", sha256.Sum256(payload))
	for i := range 30 {
		req, _ := http.NewRequest(http.MethodPut, amb.url+"/store/blob", bytes.NewReader(payload))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(got) != want {
			t.Fatalf("PUT %d: %d %q, want 200 and the body's hash", i, resp.StatusCode, got)
		}
	}
	if bad.Load() == 0 {
		t.Fatal("no request reached the failing instance: nothing was retried")
	}
	t.Logf("failing instance: %d attempts, healthy: %d", bad.Load(), good.Load())
}

func TestResponsesStream(t *testing.T) {
	next := make(chan struct{})
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		fmt.Fprint(w, "data: two\n\n")
	}))
	t.Cleanup(b.Close)
	defer close(next) // before b.Close: the handler must end for Close to return
	amb := startAmbassador(t, testEnv("AMBASSADOR_ROUTES", "events", "DISCOVERY_STATIC_EVENTS", b.Listener.Addr().String()))
	resp, err := http.Get(amb.url + "/events/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, len("data: one\n\n"))
	got := make(chan error, 1)
	go func() { _, err := io.ReadFull(resp.Body, buf); got <- err }()
	select {
	case err := <-got:
		if err != nil || string(buf) != "data: one\n\n" {
			t.Fatalf("first event: %q, %v", buf, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first event did not arrive before the stream ended: the response was buffered")
	}
}

// During DRAIN_DELAY the ambassador reports 503 on /readyz (so the local service's Consul check
// turns critical) and keeps forwarding the local service's calls.
func TestDrainKeepsForwardingWhileNotReady(t *testing.T) {
	b := echoBackend(t)
	amb := startAmbassador(t, testEnv("AMBASSADOR_ROUTES", "echo", "DISCOVERY_STATIC_ECHO", b.Listener.Addr().String(),
		"DRAIN_DELAY", "2s"))
	readyz := "http://" + amb.svc.AdminAddr() + "/readyz"
	stopped := make(chan error, 1)
	go func() { stopped <- amb.stop() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, body := get(t, readyz)
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %s after the drain began", resp.StatusCode, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range 5 {
		if e := getEcho(t, amb.url+"/echo/x"); e.Path != "/x" {
			t.Fatalf("call %d during the drain: backend saw %+v", i, e)
		}
	}
	select {
	case err := <-stopped:
		t.Fatalf("stopped before DRAIN_DELAY ended: %v", err)
	default:
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// A protocol upgrade (WebSocket's handshake) passes through the client chain: the connection is
// spliced to the instance, past the client's timeout, until the request's deadline.
func TestUpgradesPassThrough(t *testing.T) {
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		fmt.Fprint(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprint(brw, "echo: "+line)
			brw.Flush()
		}
	}))
	t.Cleanup(b.Close)
	amb := startAmbassador(t, testEnv("AMBASSADOR_ROUTES", "ws", "DISCOVERY_STATIC_WS", b.Listener.Addr().String(),
		"CLIENT_WS_TIMEOUT", "300ms", "HTTP_REQUEST_TIMEOUT", "1500ms"))
	c, err := net.Dial("tcp", strings.TrimPrefix(amb.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(c, "GET /ws/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d %s", resp.StatusCode, body)
	}
	for _, msg := range []string{"hello", "past the client's timeout"} {
		fmt.Fprint(c, msg+"\n")
		line, err := br.ReadString('\n')
		if err != nil || line != "echo: "+msg+"\n" {
			t.Fatalf("sent %q, got %q, %v", msg, line, err)
		}
		time.Sleep(600 * time.Millisecond)
	}
	// The request's deadline (HTTP_REQUEST_TIMEOUT) still bounds the upgraded connection.
	time.Sleep(600 * time.Millisecond)
	fmt.Fprint(c, "past the request's deadline\n")
	if line, err := br.ReadString('\n'); err == nil {
		t.Fatalf("the connection outlived HTTP_REQUEST_TIMEOUT: got %q", line)
	}
}
