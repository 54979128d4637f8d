package chassis_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/internal/hostilefile"
)

// issuerKey is an ES256 signing key and its JWK.
type issuerKey struct {
	priv *ecdsa.PrivateKey
	jwk  map[string]string
}

func newIssuerKey(t *testing.T, kid string) issuerKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pad := func(b []byte) string {
		out := make([]byte, 32)
		copy(out[32-len(b):], b)
		return base64.RawURLEncoding.EncodeToString(out)
	}
	return issuerKey{priv, map[string]string{"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
		"x": pad(priv.X.Bytes()), "y": pad(priv.Y.Bytes())}}
}

func (k issuerKey) token(t *testing.T, kid, sub string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jwksDoc(keys ...map[string]string) []byte {
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

// hangingJWKS serves doc until hang is set, then holds every request until the test ends. It
// records how many fetches were in flight at most.
type hangingJWKS struct {
	*httptest.Server
	hang              atomic.Bool
	fetches, inflight atomic.Int64
	maxInflight       atomic.Int64
}

func newHangingJWKS(t *testing.T, doc []byte) *hangingJWKS {
	h := &hangingJWKS{}
	release := make(chan struct{})
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.fetches.Add(1)
		n := h.inflight.Add(1)
		defer h.inflight.Add(-1)
		for m := h.maxInflight.Load(); n > m && !h.maxInflight.CompareAndSwap(m, n); m = h.maxInflight.Load() {
		}
		if h.hang.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(doc)
	}))
	t.Cleanup(func() { close(release); h.Close() })
	return h
}

// waitReady polls /readyz until it answers 200 (the key set has loaded).
func waitReady(t *testing.T, svc *chassis.Service) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get("http://" + svc.AdminAddr() + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not ready after 10s: %d %s", res.StatusCode, body)
			}
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func bearer(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// TestHungJWKSDoesNotStarveValidTokens is issue #13.2 end to end: a default-configured service (the
// load shedder in the path), its JWKS endpoint hung after the first load, and tokens with unknown
// key ids arriving ten times a second (ten times the rate), each of which used to queue for
// a 10 s fetch while holding a shedder slot. Valid tokens must keep passing (≥ 99%) and no more than
// one fetch may be in flight at any time.
func TestHungJWKSDoesNotStarveValidTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("a 4 s load run")
	}
	key := newIssuerKey(t, "k1")
	srv := newHangingJWKS(t, jwksDoc(key.jwk))
	svc, err := chassis.New("orders", chassis.WithEnv(env(
		"AUTH_JWKS_URL", srv.URL+"/jwks.json",
		"AUTH_JWKS_MIN_REFRESH", "1s", // a fetch may start every second, ten times the default's rate
	)))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleFunc("GET /me", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	start(t, svc)
	// Runs before the service stops: a connection the client dialed but never used would otherwise
	// hold http.Server.Shutdown for 5 s (net/http waits that long for a first request on it).
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	waitReady(t, svc)
	srv.hang.Store(true)

	url := "http://" + svc.Addr() + "/me"
	valid := key.token(t, "k1", "alice")
	forgedBody := valid[strings.IndexByte(valid, '.'):]
	const run = 4 * time.Second
	stop := time.Now().Add(run)
	var (
		wg                 sync.WaitGroup
		ok, failed, forged atomic.Int64
		forgedAccepted     atomic.Int64
		forgedSlowest      atomic.Int64
		codes              sync.Map
	)
	// Forged tokens: a new unknown key id every 100 ms, each on its own connection and goroutine,
	// so a request held by the server does not slow the attack down.
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; time.Now().Before(stop) && i < 100; i++ {
			hdr, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT", "kid": fmt.Sprintf("forged-%d", i)})
			tok := base64.RawURLEncoding.EncodeToString(hdr) + forgedBody
			wg.Go(func() {
				t0 := time.Now()
				if code := bearer(t, url, tok); code != http.StatusUnauthorized {
					forgedAccepted.Add(1)
				}
				forged.Add(1)
				if d := int64(time.Since(t0)); d > forgedSlowest.Load() {
					forgedSlowest.Store(d)
				}
			})
			<-tick.C
		}
	})
	// Valid tokens: four clients in closed loops, bounded in count.
	for range 4 {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop) && i < 5000; i++ {
				code := bearer(t, url, valid)
				if code == http.StatusOK {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				n, _ := codes.LoadOrStore(code, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}
		})
	}
	wg.Wait()

	total := ok.Load() + failed.Load()
	t.Logf("valid: %d of %d succeeded; forged: %d, slowest answer %v; JWKS fetches %d, at most %d in flight",
		ok.Load(), total, forged.Load(), time.Duration(forgedSlowest.Load()).Round(time.Millisecond), srv.fetches.Load(), srv.maxInflight.Load())
	codes.Range(func(k, v any) bool { t.Logf("valid-token status %v: %d", k, v.(*atomic.Int64).Load()); return true })
	if total < 100 {
		t.Fatalf("only %d valid-token requests in %v: the run says nothing", total, run)
	}
	if float64(ok.Load()) < 0.99*float64(total) {
		t.Errorf("%d of %d valid-token requests succeeded, want at least 99%%", ok.Load(), total)
	}
	if n := srv.maxInflight.Load(); n > 1 {
		t.Errorf("%d JWKS fetches in flight at once, want at most 1", n)
	}
	if n := forgedAccepted.Load(); n != 0 {
		t.Errorf("%d forged tokens not refused with 401", n)
	}
	if d := time.Duration(forgedSlowest.Load()); d > auth.DefaultFetchWait+500*time.Millisecond {
		t.Errorf("a forged token was held %v: requests for unknown keys must not wait for a hung fetch", d)
	}
}

// TestUnsafeAuthFilesExit2 is issue #13.4 and #13.9 for auth, on a real binary: AUTH_JWKS_FILE and
// the TLS files pointing at /dev/zero, a FIFO, an oversized file, a missing file (the case of an
// unreadable /etc/shadow: any read error) or a file that is not a key set exit with code 2 within a
// second, naming the variable, never echoing the content.
func TestUnsafeAuthFilesExit2(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a process")
	}
	const marker = "SECRET-CONTENT-7f3a"
	dir := t.TempDir()
	bin := filepath.Join(dir, "strict")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/strict").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	files := hostilefile.Make(t, dir, marker)
	fifo, big, shadow := files.FIFO, files.Big, files.Shadow
	for _, c := range []struct{ name, variable, path string }{
		{"/dev/zero", "AUTH_JWKS_FILE", "/dev/zero"},
		{"FIFO", "AUTH_JWKS_FILE", fifo},
		{"over 1 MiB", "AUTH_JWKS_FILE", big},
		{"missing", "AUTH_JWKS_FILE", filepath.Join(dir, "nope")},
		{"shadow-like", "AUTH_JWKS_FILE", shadow},
		{"/dev/zero", "TLS_CERT_FILE", "/dev/zero"},
		{"FIFO", "TLS_KEY_FILE", fifo},
		{"over 1 MiB", "TLS_CERT_FILE", big},
		{"shadow-like", "TLS_KEY_FILE", shadow},
	} {
		t.Run(c.variable+" "+c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin)
			cmd.Env = append(os.Environ(), "DATABASE_URL=postgres://db", "PORT=0", "ADMIN_PORT=0", "HOST=127.0.0.1", c.variable+"="+c.path)
			if strings.HasPrefix(c.variable, "TLS_") {
				other := map[string]string{"TLS_CERT_FILE": "TLS_KEY_FILE", "TLS_KEY_FILE": "TLS_CERT_FILE"}[c.variable]
				cmd.Env = append(cmd.Env, other+"="+shadow)
			}
			t0 := time.Now()
			out, err := cmd.CombinedOutput()
			took := time.Since(t0)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != chassis.ExitConfig {
				t.Fatalf("exit: %v, want code 2\n%s", err, out)
			}
			if took > time.Second {
				t.Errorf("took %v, want under a second", took)
			}
			if !strings.Contains(string(out), c.variable+`="`+c.path+`"`) {
				t.Errorf("output does not name %s=%q:\n%s", c.variable, c.path, out)
			}
			if strings.Contains(string(out), marker) {
				t.Errorf("output echoes the file's content:\n%s", out)
			}
			t.Logf("%v: %s", took.Round(time.Millisecond), strings.TrimSpace(string(out)))
		})
	}
}

// TestJWKSReadinessAndMetrics is issue #13.3 through a service: a key set holding a 1024-bit RSA key
// beside a good key verifies the good key's tokens and reports the bad one (/metrics); a key set
// without a usable key keeps /readyz at 503, naming the reason, until a good one loads; a loaded
// set stays ready (degraded) while the endpoint fails.
func TestJWKSReadinessAndMetrics(t *testing.T) {
	good := newIssuerKey(t, "k1")
	short, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	shortJWK := map[string]string{"kty": "RSA", "kid": "short", "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(short.N.Bytes()), "e": "AQAB"}
	var doc atomic.Value
	doc.Store(jwksDoc(shortJWK))
	var status atomic.Int64
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
		w.Write(doc.Load().([]byte))
	}))
	defer srv.Close()
	svc, err := chassis.New("orders", chassis.WithEnv(env("AUTH_JWKS_URL", srv.URL, "AUTH_JWKS_MIN_REFRESH", "1s")))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleFunc("GET /me", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	start(t, svc)
	get := func(path string) (int, string) {
		res, err := http.Get("http://" + svc.AdminAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	var code int
	var body string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if code, body = get("/readyz"); strings.Contains(body, "1024 bits") {
			break // the first fetch is done (the probe caches its answer for a second)
		}
	}
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "auth.jwks") || !strings.Contains(body, "1024 bits") {
		t.Fatalf("/readyz with only a 1024-bit key: %d %s", code, body)
	}

	doc.Store(jwksDoc(shortJWK, good.jwk))
	waitReady(t, svc) // Run retries after 1 s
	if code := bearer(t, "http://"+svc.Addr()+"/me", good.token(t, "k1", "alice")); code != http.StatusOK {
		t.Fatalf("token for the good key beside a 1024-bit one: %d", code)
	}
	_, metrics := get("/metrics")
	for _, want := range []string{"chassis_auth_jwks_keys{", "chassis_auth_jwks_keys_rejected{", "chassis_auth_jwks_age_seconds{", "chassis_auth_jwks_fetches_total{"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, line := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(line, "chassis_auth_jwks_keys") && !strings.HasSuffix(line, " 1") {
			t.Errorf("%s: want 1 usable key and 1 rejected", line)
		}
	}

	// The issuer fails: the keys loaded stay in use and the service stays ready, degraded.
	status.Store(http.StatusInternalServerError)
	forged := good.token(t, "k1", "x")
	hdr, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": "new"})
	deadline := time.Now().Add(5 * time.Second)
	for {
		// A token with a new key id makes a fetch, at most once per AUTH_JWKS_MIN_REFRESH.
		bearer(t, "http://"+svc.Addr()+"/me", base64.RawURLEncoding.EncodeToString(hdr)+forged[strings.IndexByte(forged, '.'):])
		code, body = get("/readyz")
		if strings.Contains(body, "degraded") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != http.StatusOK || !strings.Contains(body, "auth.jwks.refresh") || !strings.Contains(body, "500") {
		t.Errorf("/readyz while the issuer fails after a load: %d %s", code, body)
	}
}

// TestLargeTokens: a token over auth.MaxTokenBytes that fits the header limit is a problem+json
// 401; a header block over HTTP_MAX_HEADER_BYTES gets net/http's own 431 text/plain, which no
// handler can change (documented in docs/protection.md).
func TestLargeTokens(t *testing.T) {
	key := newIssuerKey(t, "k1")
	dir := t.TempDir()
	file := filepath.Join(dir, "jwks.json")
	os.WriteFile(file, jwksDoc(key.jwk), 0o600)
	svc, err := chassis.New("orders", chassis.WithEnv(env("AUTH_JWKS_FILE", file)))
	if err != nil {
		t.Fatal(err)
	}
	svc.HandleFunc("GET /me", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	start(t, svc)
	send := func(tok string) (int, string, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+svc.Addr()+"/me", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		return res.StatusCode, res.Header.Get("Content-Type"), res.Header.Get("WWW-Authenticate")
	}
	code, ct, challenge := send(strings.Repeat("a", auth.MaxTokenBytes+1))
	if code != http.StatusUnauthorized || ct != "application/problem+json" || !strings.Contains(challenge, "token too large") {
		t.Errorf("a 16 KiB token: %d %q %q", code, ct, challenge)
	}
	code, ct, _ = send(strings.Repeat("a", 1<<20))
	if code != http.StatusRequestHeaderFieldsTooLarge || !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("a 1 MiB token: %d %q: if net/http now lets handlers answer, make it problem+json", code, ct)
	}
}
