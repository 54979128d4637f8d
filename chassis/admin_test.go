package chassis_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cloudchassis/kit/chassis"
)

const adminToken = "0123456789abcdef-admin"

func adminService(t *testing.T, kv ...string) *chassis.Service {
	t.Helper()
	svc, err := chassis.New("svc", chassis.WithEnv(env(kv...)))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleAdmin("GET /debug/custom", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "custom")
	}))
	return svc
}

// TestAdminDebugAccess drives the admin handler directly with the peers a test cannot connect from:
// every mode, loopback and remote peers, with and without the token. The probes and /metrics answer
// everyone in every mode; the debug endpoints only whom the mode allows.
func TestAdminDebugAccess(t *testing.T) {
	const (
		local   = "127.0.0.1:40000"
		local6  = "[::1]:40000"
		mapped  = "[::ffff:127.0.0.1]:40000"
		remote  = "10.1.2.3:40000"
		remote6 = "[2001:db8::1]:40000"
	)
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	spoofed := http.Header{"X-Forwarded-For": {"127.0.0.1"}, "X-Real-Ip": {"127.0.0.1"}, "Forwarded": {"for=127.0.0.1"}}
	type req struct {
		peer string
		h    http.Header
		want int // status of the debug endpoints
	}
	cases := []struct {
		name string
		env  []string
		reqs []req
	}{
		{"default is loopback", nil, []req{
			{local, nil, 200}, {local6, nil, 200}, {mapped, nil, 200},
			{remote, nil, 403}, {remote6, nil, 403}, {remote, spoofed, 403},
			{remote, bearer(adminToken), 403}, // no token configured: a token opens nothing
			{"not-an-address", nil, 403},
		}},
		{"loopback with token", []string{"ADMIN_DEBUG", "loopback", "ADMIN_TOKEN", adminToken}, []req{
			{local, nil, 200}, {remote, bearer(adminToken), 200}, {remote6, http.Header{"Authorization": {"bearer " + adminToken}}, 200},
			{remote, nil, 401}, {remote, bearer("wrong"), 401}, {remote, bearer(adminToken + "x"), 401},
			{remote, http.Header{"Authorization": {"Basic " + adminToken}}, 401}, {remote, spoofed, 401},
		}},
		{"token", []string{"ADMIN_DEBUG", "token", "ADMIN_TOKEN", adminToken}, []req{
			{local, nil, 401}, {local, bearer("wrong"), 401}, {remote, nil, 401},
			{local, bearer(adminToken), 200}, {remote, bearer(adminToken), 200},
		}},
		{"open", []string{"ADMIN_DEBUG", "open"}, []req{{local, nil, 200}, {remote, nil, 200}, {remote6, nil, 200}}},
		{"off", []string{"ADMIN_DEBUG", "off", "ADMIN_TOKEN", adminToken}, []req{
			{local, nil, 404}, {remote, bearer(adminToken), 404},
		}},
	}
	debug := []struct{ method, path, body string }{
		{"GET", "/debug/pprof/", ""}, {"GET", "/debug/pprof/cmdline", ""}, {"GET", "/debug/info", ""},
		{"GET", "/debug/loglevel", ""}, {"PUT", "/debug/loglevel", `{"level":"debug"}`}, {"GET", "/debug/custom", ""},
	}
	public := []string{"/livez", "/readyz", "/startupz", "/metrics"}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			svc := adminService(t, c.env...)
			h := svc.AdminHandler()
			serve := func(method, path, body, peer string, hdr http.Header) *httptest.ResponseRecorder {
				r := httptest.NewRequest(method, path, strings.NewReader(body))
				r.RemoteAddr = peer
				for k, v := range hdr {
					r.Header[k] = v
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				return w
			}
			for _, rq := range c.reqs {
				for _, d := range debug {
					w := serve(d.method, d.path, d.body, rq.peer, rq.h)
					if w.Code != rq.want {
						t.Errorf("%s %s from %s with %v: %d, want %d", d.method, d.path, rq.peer, rq.h, w.Code, rq.want)
					}
					if w.Code == 401 && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
						t.Errorf("401 without a Bearer challenge: %v", w.Header())
					}
					if w.Code == 401 || w.Code == 403 {
						if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" || strings.Contains(w.Body.String(), adminToken) {
							t.Errorf("refusal: %s %s", ct, w.Body)
						}
					}
				}
				for _, p := range public {
					// Not started: readiness answers 503, which is still the probe answering.
					if w := serve("GET", p, "", rq.peer, rq.h); w.Code != 200 && w.Code != 503 {
						t.Errorf("%s from %s: %d, want the probe's own answer in every mode", p, rq.peer, w.Code)
					}
				}
			}
		})
	}
}

// TestAdminDebugRefusedLevelChangeKeepsLevel checks that a refused PUT /debug/loglevel changes nothing.
func TestAdminDebugRefusedLevelChangeKeepsLevel(t *testing.T) {
	h := adminService(t, "LOG_LEVEL", "warn").AdminHandler()
	r := httptest.NewRequest("PUT", "/debug/loglevel", strings.NewReader(`{"level":"debug"}`))
	r.RemoteAddr = "192.0.2.7:5555"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 403 {
		t.Fatalf("remote PUT: %d", w.Code)
	}
	r = httptest.NewRequest("GET", "/debug/loglevel", nil)
	r.RemoteAddr = "127.0.0.1:5555"
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if !strings.Contains(w.Body.String(), `"warn"`) {
		t.Fatalf("level after a refused change: %s", w.Body)
	}
}

// TestAdminDebugOverLoopbackSocket runs the service on 127.0.0.1: a real loopback connection reaches
// the debug endpoints in the default mode, and in token mode only with the token.
func TestAdminDebugOverLoopbackSocket(t *testing.T) {
	svc := adminService(t)
	start(t, svc)
	admin := "http://" + svc.AdminAddr()
	for _, p := range []string{"/debug/pprof/", "/debug/info", "/debug/loglevel", "/debug/custom", "/readyz", "/metrics"} {
		if res, body := get(t, admin+p, nil); res.StatusCode != 200 {
			t.Errorf("default mode, loopback %s: %d %s", p, res.StatusCode, body)
		}
	}

	svc = adminService(t, "ADMIN_DEBUG", "token", "ADMIN_TOKEN", adminToken)
	start(t, svc)
	admin = "http://" + svc.AdminAddr()
	if res, _ := get(t, admin+"/debug/info", nil); res.StatusCode != 401 {
		t.Errorf("token mode without the token: %d, want 401", res.StatusCode)
	}
	if res, body := get(t, admin+"/debug/info", http.Header{"Authorization": {"Bearer " + adminToken}}); res.StatusCode != 200 || !strings.Contains(body, `"service": "svc"`) {
		t.Errorf("token mode with the token: %d %s", res.StatusCode, body)
	}
	if res, _ := get(t, admin+"/readyz", nil); res.StatusCode != 200 {
		t.Errorf("token mode /readyz: %d, want 200", res.StatusCode)
	}
}

func TestAdminDebugTokenModeNeedsToken(t *testing.T) {
	_, err := chassis.New("svc", chassis.WithEnv(env("ADMIN_DEBUG", "token")))
	if err == nil || !strings.Contains(err.Error(), "ADMIN_TOKEN") {
		t.Fatalf("ADMIN_DEBUG=token without a token: %v", err)
	}
	_, err = chassis.New("svc", chassis.WithEnv(env("ADMIN_DEBUG", "public")))
	if err == nil || !strings.Contains(err.Error(), "ADMIN_DEBUG") {
		t.Fatalf("ADMIN_DEBUG=public: %v", err)
	}
}
