package chassis_test

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/internal/syncbuf"
	"github.com/cloudchassis/kit/resilience"
)

// The request core gives each request the caller's propagated deadline, capped by
// HTTP_REQUEST_TIMEOUT, exactly as a plain handler calling resilience.WithPropagatedDeadline gets
// it (the one implementation), and adds no allocation when there is no deadline to set.
func TestRequestDeadline(t *testing.T) {
	for _, tc := range []struct {
		name, timeout, header string
		want                  time.Duration // 0: no deadline
	}{
		{"header under the cap", "30s", "250", 250 * time.Millisecond},
		{"cap under the header", "100ms", "250", 100 * time.Millisecond},
		{"no header", "2s", "", 2 * time.Second},
		{"malformed header", "2s", "soon", 2 * time.Second},
		{"non-positive header", "2s", "0", 2 * time.Second},
		{"header, no cap", "0s", "250", 250 * time.Millisecond},
		{"neither", "0s", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got, viaMiddleware time.Duration
			left := func(r *http.Request) time.Duration {
				if dl, ok := r.Context().Deadline(); ok {
					return time.Until(dl)
				}
				return 0
			}
			svc, err := chassis.New("svc", chassis.WithEnv(env("HTTP_REQUEST_TIMEOUT", tc.timeout)), chassis.WithLogOutput(io.Discard))
			if err != nil {
				t.Fatal(err)
			}
			svc.HandleFunc("GET /x", func(_ http.ResponseWriter, r *http.Request) { got = left(r) })
			timeout, _ := time.ParseDuration(tc.timeout)
			mw := http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
				ctx, cancel := resilience.WithPropagatedDeadline(r.Context(), r.Header, timeout)
				defer cancel()
				viaMiddleware = left(r.WithContext(ctx))
			})
			req := httptest.NewRequest(http.MethodGet, "/x", nil)
			if tc.header != "" {
				req.Header.Set(resilience.TimeoutHeader, tc.header)
			}
			svc.Handler().ServeHTTP(httptest.NewRecorder(), req)
			mw.ServeHTTP(httptest.NewRecorder(), req)
			for name, d := range map[string]time.Duration{"core": got, "WithPropagatedDeadline": viaMiddleware} {
				if tc.want == 0 && d != 0 || tc.want != 0 && (d > tc.want || d < tc.want-time.Second/4) {
					t.Errorf("%s: time left %v, want %v", name, d, tc.want)
				}
			}
		})
	}

	// No deadline to set costs nothing: the same allocations with and without the deadline code's
	// inputs present (a malformed header is read and ignored).
	svc, err := chassis.New("svc", chassis.WithEnv(env("HTTP_REQUEST_TIMEOUT", "0s")), chassis.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleFunc("GET /x", func(http.ResponseWriter, *http.Request) {})
	h := svc.Handler()
	allocs := func(header string) float64 {
		req := httptest.NewRequest(http.MethodGet, "/x", nil)
		if header != "" {
			req.Header.Set(resilience.TimeoutHeader, header)
		}
		w := httptest.NewRecorder()
		return testing.AllocsPerRun(50, func() {
			clear(w.Header())
			h.ServeHTTP(w, req)
		})
	}
	if without, malformed := allocs(""), allocs("soon"); malformed != without {
		t.Errorf("a request without a deadline to set allocates %v times, %v with an ignored header", without, malformed)
	}
}

// hopProc is a running testdata/hop process.
type hopProc struct {
	addr string
	logs *syncbuf.Buffer
}

// startHop starts the hop binary as service name with env, and waits for its "ready" line.
func startHop(t *testing.T, bin, name string, env ...string) *hopProc {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), append([]string{"SERVICE_NAME=" + name, "HOST=127.0.0.1", "PORT=0",
		"ADMIN_PORT=0", "DRAIN_DELAY=0s", "ACCESS_LOG=false", "DISCOVERY=static"}, env...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &hopProc{logs: &syncbuf.Buffer{}}
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready, exited := make(chan string, 1), make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.logs.Write(append(sc.Bytes(), '\n'))
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "ready" {
				addr, _ := m["addr"].(string)
				ready <- addr
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s's output:\n%s", name, p.logs.String())
		}
	})
	select {
	case p.addr = <-ready:
	case <-exited:
		t.Fatalf("%s exited before ready:\n%s", name, p.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not ready after 20s:\n%s", name, p.logs.String())
	}
	return p
}

// TestDeadlinePropagatesAcrossProcesses runs three processes, A → B → C, each a chassis service
// calling the next through svc.Client. A's request deadline (HTTP_REQUEST_TIMEOUT) is the only
// one set; B and C keep the default of 30 s. C's work (waiting on its request context) must be
// bounded by A's budget: C's context arrives with a deadline no later than A's, and is cancelled
// when A's budget runs out, not 30 s later.
func TestDeadlinePropagatesAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three processes")
	}
	const budget = 500 * time.Millisecond
	slack := 300 * time.Millisecond // scheduling on a loaded machine; the unbounded case is 30 s
	bin := filepath.Join(t.TempDir(), "hop")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/hop").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	c := startHop(t, bin, "c")
	b := startHop(t, bin, "b", "HOP_NEXT=c", "DISCOVERY_STATIC_C="+c.addr)
	a := startHop(t, bin, "a", "HOP_NEXT=b", "DISCOVERY_STATIC_B="+b.addr, "HTTP_REQUEST_TIMEOUT="+budget.String())

	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	start := time.Now()
	resp, err := client.Get("http://" + a.addr + "/work")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != http.StatusGatewayTimeout || took > budget+slack {
		t.Fatalf("A answered %d after %v, want 504 within its budget %v (+%v)", resp.StatusCode, took, budget, slack)
	}

	resp, err = client.Get("http://" + c.addr + "/report")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Header      string        `json:"header"`
		HasDeadline bool          `json:"has_deadline"`
		Budget      time.Duration `json:"budget"`
		Started     int64         `json:"started"`
		Ended       int64         `json:"ended"`
		Err         string        `json:"err"`
	}
	err = json.NewDecoder(resp.Body).Decode(&rep)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("C's report: %d, %v", resp.StatusCode, err)
	}
	t.Logf("C: %+v; A answered after %v", rep, took)

	ms, _ := strconv.Atoi(rep.Header)
	if !rep.HasDeadline || ms <= 0 || time.Duration(ms)*time.Millisecond > budget {
		t.Fatalf("C's request: %s=%q, deadline %t; want a deadline within A's budget of %v",
			resilience.TimeoutHeader, rep.Header, rep.HasDeadline, budget)
	}
	if rep.Budget > budget || rep.Budget < budget/2 {
		t.Fatalf("C's context had %v left when its work started, want at most A's budget %v (and not nothing)", rep.Budget, budget)
	}
	// C's context ends when A's budget runs out: at its own propagated deadline (a few margins
	// before A's) or, at the latest, when B gives up and closes the connection.
	ended := time.Unix(0, rep.Ended).Sub(start)
	if ended > budget+slack || ended < budget-budget/5 {
		t.Fatalf("C's context ended %v after A's request started, want at A's budget %v", ended, budget)
	}
	if rep.Err != "context deadline exceeded" && rep.Err != "context canceled" {
		t.Fatalf("C's context ended with %q", rep.Err)
	}
}
