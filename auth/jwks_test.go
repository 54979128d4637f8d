package auth_test

import (
	"bytes"
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
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/golang-jwt/jwt/v5"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/internal/obs/obstest"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// fakeIssuer is a JWKS endpoint as an http.RoundTripper, usable inside a synctest bubble: it
// answers doc with status, or, while hang is set, holds every request until its context ends.
type fakeIssuer struct {
	mu      sync.Mutex
	doc     []byte
	status  int
	hang    bool
	delay   time.Duration // before answering
	started []time.Time

	inflight, maxInflight atomic.Int64
}

func newFakeIssuer(doc []byte) *fakeIssuer { return &fakeIssuer{doc: doc, status: http.StatusOK} }

func (f *fakeIssuer) set(fn func(f *fakeIssuer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeIssuer) fetches() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.started...)
}

func (f *fakeIssuer) RoundTrip(r *http.Request) (*http.Response, error) {
	n := f.inflight.Add(1)
	defer f.inflight.Add(-1)
	for m := f.maxInflight.Load(); n > m && !f.maxInflight.CompareAndSwap(m, n); m = f.maxInflight.Load() {
	}
	f.mu.Lock()
	f.started = append(f.started, time.Now())
	hang, status, doc, delay := f.hang, f.status, f.doc, f.delay
	f.mu.Unlock()
	if hang {
		<-r.Context().Done()
		return nil, r.Context().Err()
	}
	time.Sleep(delay)
	return &http.Response{StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Header: http.Header{"Content-Type": {"application/jwk-set+json"}}, Body: io.NopCloser(bytes.NewReader(doc)), Request: r}, nil
}

func (f *fakeIssuer) client() *http.Client { return &http.Client{Transport: f} }

// TestHungJWKSEndpoint is the timing logic of issue #13.2 in fake time: with the endpoint hung and
// one unknown key id per second for 30 s, known keys are served without waiting, one fetch at most
// is in flight, a request waits only within the first moments of a fetch (four times as long as
// the last successful fetch took), and the timed-out fetch is recorded, so the next starts a whole
// WithMinRefresh later.
func TestHungJWKSEndpoint(t *testing.T) {
	key, _ := keys(t)
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(jwksJSON("k1", &key.PublicKey))
		iss.delay = 60 * time.Millisecond // a normal fetch takes 60 ms
		jwks := must(auth.NewJWKS("https://issuer.test/jwks", auth.WithHTTPClient(iss.client())))
		defer jwks.Close()
		ctx := context.Background()
		if err := jwks.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		iss.set(func(f *fakeIssuer) { f.hang = true })
		time.Sleep(auth.DefaultMinRefresh) // the next unknown key id may fetch

		var waited []time.Duration
		for i := range 30 {
			// A known key never waits, fetch or no fetch: no fake time passes.
			t0 := time.Now()
			if _, err := jwks.Key(ctx, "k1", "RS256"); err != nil || time.Since(t0) != 0 {
				t.Fatalf("second %d: known key: %v after %v", i, err, time.Since(t0))
			}
			t0 = time.Now()
			_, err := jwks.Key(ctx, fmt.Sprintf("forged-%d", i), "RS256")
			if !errors.Is(err, auth.ErrUnknownKey) {
				t.Fatalf("second %d: unknown key id: %v", i, err)
			}
			waited = append(waited, time.Since(t0))
			time.Sleep(time.Second - time.Since(t0))
		}
		// The first forged token started the fetch and waited four times as long as a normal fetch
		// takes; every later one was answered at once, although the fetch ran on for
		// DefaultFetchTimeout.
		if waited[0] != 240*time.Millisecond {
			t.Errorf("the request that started the fetch waited %v, want 240ms", waited[0])
		}
		for i, d := range waited[1:] {
			if d != 0 {
				t.Errorf("request %d waited %v for a fetch started %d s earlier", i+1, d, i+1)
			}
		}
		if n := len(iss.fetches()); n != 2 { // the first load, and one for the forged key ids
			t.Errorf("%d fetches, want 2", n)
		}
		if n := iss.maxInflight.Load(); n != 1 {
			t.Errorf("%d fetches in flight at once, want 1", n)
		}
		st := jwks.Status()
		if !errors.Is(st.Err, context.DeadlineExceeded) || st.Fetching || st.Keys != 1 {
			t.Errorf("after the timeout: %+v, want the timeout recorded and the key kept", st)
		}
		if err := jwks.Ready(ctx); err != nil {
			t.Errorf("a loaded key set is ready while the endpoint hangs: %v", err)
		}

		// The next fetch starts a whole minimum interval after the timed-out one began.
		first := iss.fetches()[1]
		time.Sleep(first.Add(auth.DefaultMinRefresh).Sub(time.Now()) - time.Millisecond)
		jwks.Key(ctx, "forged-early", "RS256")
		if n := len(iss.fetches()); n != 2 {
			t.Fatalf("a fetch started %v after the last one", time.Since(first))
		}
		time.Sleep(time.Millisecond)
		iss.set(func(f *fakeIssuer) { f.hang = false })
		if _, err := jwks.Key(ctx, "forged-late", "RS256"); !errors.Is(err, auth.ErrUnknownKey) {
			t.Fatal(err)
		}
		if n := len(iss.fetches()); n != 3 || jwks.Err() != nil {
			t.Fatalf("%d fetches, err %v: want a third, successful one", n, jwks.Err())
		}
	})
}

// TestJWKSWaitersAreBounded: while a fetch hangs, at most four requests wait for it, a waiting
// request leaves when its context ends, and Close ends the fetch.
func TestJWKSWaitersAreBounded(t *testing.T) {
	key, _ := keys(t)
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(jwksJSON("k1", &key.PublicKey))
		iss.hang = true
		jwks := must(auth.NewJWKS("https://issuer.test/jwks", auth.WithHTTPClient(iss.client()), auth.WithFetchWait(500*time.Millisecond)))
		var mu sync.Mutex
		var waits []time.Duration
		var wg sync.WaitGroup
		for i := range 10 {
			wg.Go(func() {
				t0 := time.Now()
				jwks.Key(context.Background(), fmt.Sprintf("k%d", i), "RS256")
				mu.Lock()
				waits = append(waits, time.Since(t0))
				mu.Unlock()
			})
		}
		wg.Wait()
		var waited int
		for _, d := range waits {
			switch d {
			case 500 * time.Millisecond:
				waited++
			case 0:
			default:
				t.Errorf("a request waited %v", d)
			}
		}
		if waited != 4 {
			t.Errorf("%d requests waited for the fetch, want 4 (the rest answered at once)", waited)
		}

		// A fetch is still running: a request that joins it leaves when its context ends.
		jwks2 := must(auth.NewJWKS("https://issuer.test/jwks", auth.WithHTTPClient(iss.client())))
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		t0 := time.Now()
		if _, err := jwks2.Key(ctx, "k1", "RS256"); !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) != 100*time.Millisecond {
			t.Errorf("err %v after %v, want the request's own deadline after 100ms", err, time.Since(t0))
		}
		if err := jwks2.Ready(ctx); err == nil || !strings.Contains(err.Error(), "first fetch running") {
			t.Errorf("Ready during the first fetch: %v", err)
		}
		// Close ends both hung fetches at once and leaves no goroutine behind.
		t0 = time.Now()
		jwks.Close()
		jwks2.Close()
		if time.Since(t0) != 0 || iss.inflight.Load() != 0 {
			t.Errorf("Close took %v, %d fetches still in flight", time.Since(t0), iss.inflight.Load())
		}
		if err := jwks2.Refresh(context.Background()); err == nil {
			t.Error("Refresh after Close succeeded")
		}
	})
}

// TestJWKSRunRetriesAndReadiness: Run retries a failing endpoint after 1 s, 2 s, 4 s…; readiness
// fails until a key set loads, saying why, and then holds while the endpoint fails again.
func TestJWKSRunRetriesAndReadiness(t *testing.T) {
	key, _ := keys(t)
	synctest.Test(t, func(t *testing.T) {
		iss := newFakeIssuer(jwksJSON("k1", &key.PublicKey))
		iss.status = http.StatusServiceUnavailable
		jwks := must(auth.NewJWKS("https://issuer.test/jwks", auth.WithHTTPClient(iss.client())))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		start := time.Now()
		go func() { done <- jwks.Run(ctx) }()

		time.Sleep(6 * time.Second)
		synctest.Wait()
		var at []time.Duration
		for _, s := range iss.fetches() {
			at = append(at, s.Sub(start))
		}
		if want := []time.Duration{0, time.Second, 3 * time.Second}; fmt.Sprint(at) != fmt.Sprint(want) {
			t.Errorf("fetches at %v, want %v", at, want)
		}
		if err := jwks.Ready(ctx); err == nil || !strings.Contains(err.Error(), "503") {
			t.Errorf("Ready before any key set loaded: %v, want the 503", err)
		}
		iss.set(func(f *fakeIssuer) { f.status = http.StatusOK })
		time.Sleep(2 * time.Second) // the retry at 7 s
		synctest.Wait()
		if err := jwks.Ready(ctx); err != nil {
			t.Fatalf("Ready after a successful fetch: %v", err)
		}
		iss.set(func(f *fakeIssuer) { f.status = http.StatusInternalServerError })
		time.Sleep(auth.DefaultRefreshInterval)
		synctest.Wait()
		if err := jwks.Ready(ctx); err != nil || jwks.Err() == nil {
			t.Errorf("stale but loaded: Ready %v (want nil), Err %v (want the 500)", err, jwks.Err())
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		jwks.Close()
	})
}

// rsaJWK returns the JWK of an RSA public key.
func rsaJWK(kid string, pub *rsa.PublicKey) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes())}
}

// badKeys are a 1024-bit RSA key and a P-256 point off the curve.
func badKeys(t testing.TB) []map[string]string {
	short, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]byte, 32)
	ec.X.FillBytes(x)
	y := make([]byte, 32)
	new(big.Int).Add(ec.Y, big.NewInt(1)).FillBytes(y)
	return []map[string]string{
		rsaJWK("short", &short.PublicKey),
		{"kty": "EC", "crv": "P-256", "kid": "off-curve", "alg": "ES256",
			"x": base64.RawURLEncoding.EncodeToString(x), "y": base64.RawURLEncoding.EncodeToString(y)},
	}
}

func keySet(keys ...map[string]string) []byte {
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

// logRecords collects slog records.
type logRecords struct {
	mu   sync.Mutex
	recs []string
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	l.mu.Lock()
	l.recs = append(l.recs, b.String())
	l.mu.Unlock()
	return nil
}
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecords) WithGroup(string) slog.Handler      { return l }
func (l *logRecords) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.recs, "\n")
}

// gauges reads the JWKS metrics.
func jwksMetrics(t *testing.T, r *sdkmetric.ManualReader) map[string]string {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != semconv.ScopeAuth {
			continue
		}
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				out[m.Name] = fmt.Sprint(d.DataPoints[0].Value)
			case metricdata.Gauge[float64]:
				out[m.Name] = "set"
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					typ, _ := dp.Attributes.Value(semconv.AttrErrorType)
					out[m.Name+" "+typ.AsString()] = fmt.Sprint(dp.Value)
				}
			}
		}
	}
	return out
}

// TestBadKeyInSet is issue #13.3: a 1024-bit RSA key and an off-curve EC key beside a good key no
// longer make the whole set rejected. Tokens for the good key pass, and the bad keys are reported:
// Status, a log record each, the rejected-keys gauge. A set without any usable key is a failed
// fetch: not ready, logged at Error, counted with error.type=invalid_key_set.
func TestBadKeyInSet(t *testing.T) {
	key, _ := keys(t)
	bad := badKeys(t)
	iss := newFakeIssuer(keySet(bad[0], rsaJWK("good", &key.PublicKey), bad[1]))
	logs := &logRecords{}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	jwks := must(auth.NewJWKS("https://user:pw@issuer.test/jwks", auth.WithHTTPClient(iss.client()),
		auth.WithLogger(slog.New(logs)), auth.WithMeterProvider(mp)))
	defer jwks.Close()
	v, err := auth.NewVerifier(jwks)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, "good", key, claims(time.Now(), nil))); err != nil {
		t.Fatalf("token for the good key beside two bad ones: %v", err)
	}
	st := jwks.Status()
	if st.Keys != 1 || len(st.Rejected) != 2 || st.Rejected[0].KeyID != "short" || st.Rejected[1].KeyID != "off-curve" {
		t.Fatalf("status %+v", st)
	}
	for _, want := range []string{"1024 bits is too short", "not on the curve"} {
		if !strings.Contains(st.Rejected[0].Error()+st.Rejected[1].Error(), want) {
			t.Errorf("rejections %v lack %q", st.Rejected, want)
		}
	}
	out := logs.String()
	for _, want := range []string{"WARN jwks: key rejected", "kid=short", "kid=off-curve", "INFO jwks: key set loaded"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "pw@") {
		t.Errorf("the log shows the URL's password:\n%s", out)
	}
	m := jwksMetrics(t, reader)
	if m[semconv.MetricAuthJWKSKeys] != "1" || m[semconv.MetricAuthJWKSKeysRejected] != "2" || m[semconv.MetricAuthJWKSAge] != "set" || m[semconv.MetricAuthJWKSFetches+" "] != "1" {
		t.Errorf("metrics %v", m)
	}

	// The same rejections on the next fetch are not logged again.
	before := strings.Count(logs.String(), "key rejected")
	if err := jwks.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "key rejected"); n != before {
		t.Errorf("unchanged rejections logged again: %d records, were %d", n, before)
	}

	// A set of bad keys only: the good key stays in use, the fetch counts as failed.
	iss.set(func(f *fakeIssuer) { f.doc = keySet(bad...) })
	if err := jwks.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "no usable signature key") {
		t.Fatalf("refresh to a set without a usable key: %v", err)
	}
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, "good", key, claims(time.Now(), nil))); err != nil {
		t.Fatalf("the last good key was dropped: %v", err)
	}
	if m := jwksMetrics(t, reader); m[semconv.MetricAuthJWKSFetches+" "+semconv.ReasonInvalidKeySet] != "1" {
		t.Errorf("metrics %v", m)
	}

	// Never loaded: not ready, and the reason names the bad keys.
	fresh := must(auth.NewJWKS("https://issuer.test/jwks", auth.WithHTTPClient(iss.client()), auth.WithLogger(slog.New(logs))))
	defer fresh.Close()
	fresh.Refresh(context.Background())
	if err := fresh.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "1024 bits") {
		t.Errorf("Ready with only bad keys: %v", err)
	}
	if !strings.Contains(logs.String(), "ERROR jwks: fetch failed and no key set is loaded") {
		t.Errorf("log:\n%s", logs)
	}
}

// TestHugeRSAExponentRejected: crypto/rsa refuses to verify with an exponent above 2³¹-1, so such a
// key is reported as rejected rather than counted as usable (which would keep /readyz green while
// every token signed with it fails).
func TestHugeRSAExponentRejected(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	jwk := rsaJWK("huge-e", &k.PublicKey)
	jwk["e"] = base64.RawURLEncoding.EncodeToString([]byte{0xff, 0xff, 0xff, 0xff})
	set, err := auth.ParseJWKS(keySet(jwk))
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 0 || len(set.Rejected) != 1 || !strings.Contains(set.Rejected[0].Err.Error(), "exponent") {
		t.Fatalf("keys %d, rejected %+v; want the key rejected for its exponent", len(set.Keys), set.Rejected)
	}
}

func TestJWKSInstrumentErrorsReturned(t *testing.T) {
	if _, err := auth.NewJWKS("https://issuer.test/jwks", auth.WithMeterProvider(obstest.Refusing{})); !errors.Is(err, obstest.ErrRefused) {
		t.Fatal(err)
	}
}
