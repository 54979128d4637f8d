package chassis_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
)

// tlsCallee starts a service named name that serves GET /who over TLS with the certificate in f,
// requiring client certificates signed by a CA of caFile, and answers with the caller's identity
// and the protocol. extra are more variables.
func tlsCallee(t *testing.T, name string, f files, caFile string, h http.HandlerFunc, extra ...string) *chassis.Service {
	t.Helper()
	kv := append([]string{"TLS_CERT_FILE", f.cert, "TLS_KEY_FILE", f.key, "TLS_CLIENT_CA_FILE", caFile}, extra...)
	svc, err := chassis.New(name, chassis.WithEnv(env(kv...)), chassis.WithoutSignals())
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		h = func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", auth.Subject(r.Context()), r.Proto)
		}
	}
	svc.HandleFunc("GET /who", h)
	start(t, svc)
	return svc
}

func call(ctx context.Context, c *http.Client, url string) (*http.Response, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, "", err
	}
	res, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res, string(b), err
}

// Two Chassis services talk mutual TLS end to end, configured only through the environment: the
// callee with TLS_*, the caller with the shared CLIENT_TLS_* and one dependency's
// CLIENT_<NAME>_TLS_* overrides. The caller's code keeps its http:// URLs (CLIENT_TLS_ENABLED),
// verifies the service name (the instances are dialled by IP address), presents its certificate,
// and speaks HTTP/2 with a callee that offers it. Without a client certificate, with the wrong CA or the wrong server name, the
// calls fail.
func TestMutualTLSBetweenServices(t *testing.T) {
	dir := t.TempDir()
	meshCA, otherCA := newTestCA(t, "mesh CA"), newTestCA(t, "partner CA")
	meshBundle := filepath.Join(dir, "mesh-ca.pem")
	otherBundle := filepath.Join(dir, "partner-ca.pem")
	writeAtomic(t, meshBundle, bundle(meshCA))
	writeAtomic(t, otherBundle, bundle(otherCA))

	// pricing is in the mesh; stock belongs to a partner whose CA signs its certificate but who
	// trusts the mesh's client certificates.
	pricing := tlsCallee(t, "pricing", meshCA.issue(t, "pricing").write(t, dir, "pricing"), meshBundle, nil)
	stock := tlsCallee(t, "stock", otherCA.issue(t, "stock.partner.example").write(t, dir, "stock"), meshBundle, nil)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "plain %s", r.Proto)
	}))
	defer plain.Close()
	// ledger is not a Chassis service: it offers HTTP/2 (Chassis servers do not, see docs) and
	// requires a mesh client certificate.
	ledgerCert, err := tls.X509KeyPair(func() ([]byte, []byte) { l := meshCA.issue(t, "ledger"); return l.certPEM, l.keyPEM }())
	if err != nil {
		t.Fatal(err)
	}
	meshPool := x509.NewCertPool()
	meshPool.AddCert(meshCA.cert)
	ledger := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", auth.CertIdentity(r.TLS.VerifiedChains[0][0]), r.Proto)
	}))
	ledger.EnableHTTP2 = true
	ledger.TLS = &tls.Config{Certificates: []tls.Certificate{ledgerCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: meshPool}
	ledger.StartTLS()
	defer ledger.Close()
	gw := meshCA.issue(t, "spiffe://mesh.test/gateway").write(t, dir, "gateway")

	caller := func(t *testing.T, kv ...string) *chassis.Service {
		t.Helper()
		base := []string{
			"DISCOVERY_STATIC_PRICING", pricing.Addr(),
			"DISCOVERY_STATIC_STOCK", stock.Addr(),
			"DISCOVERY_STATIC_INVENTORY", strings.TrimPrefix(plain.URL, "http://"),
			"DISCOVERY_STATIC_LEDGER", strings.TrimPrefix(ledger.URL, "https://"),
			"CLIENT_PRICING_RETRIES", "0", "CLIENT_STOCK_RETRIES", "0",
		}
		svc, err := chassis.New("gateway", chassis.WithEnv(env(append(base, kv...)...)), chassis.WithoutSignals())
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("mutual TLS", func(t *testing.T) {
		svc := caller(t,
			"CLIENT_TLS_ENABLED", "true", "CLIENT_TLS_CA_FILE", meshBundle,
			"CLIENT_TLS_CERT_FILE", gw.cert, "CLIENT_TLS_KEY_FILE", gw.key,
			// The partner's service: its own CA and the name on its certificate.
			"CLIENT_STOCK_TLS_CA_FILE", otherBundle, "CLIENT_STOCK_TLS_SERVER_NAME", "stock.partner.example",
			// A dependency outside the mesh.
			"CLIENT_INVENTORY_TLS_ENABLED", "false")
		pc, sc, ic, lc := svc.Client("pricing"), svc.Client("stock"), svc.Client("inventory"), svc.Client("ledger")
		start(t, svc)
		for _, c := range []struct {
			client *http.Client
			url    string
			want   string
		}{
			{pc, "http://pricing/who", "spiffe://mesh.test/gateway HTTP/1.1"},
			{sc, "https://stock/who", "spiffe://mesh.test/gateway HTTP/1.1"},
			{ic, "http://inventory/who", "plain HTTP/1.1"},
			{lc, "http://ledger/who", "spiffe://mesh.test/gateway HTTP/2.0"},
		} {
			res, body, err := call(ctx, c.client, c.url)
			if err != nil {
				t.Fatalf("GET %s: %v", c.url, err)
			}
			if res.StatusCode != http.StatusOK || body != c.want {
				t.Errorf("GET %s: %d %q, want %q", c.url, res.StatusCode, body, c.want)
			}
			if !strings.HasPrefix(c.want, "plain") && (res.TLS == nil || len(res.TLS.PeerCertificates) == 0) {
				t.Errorf("GET %s: no TLS state on the response", c.url)
			}
		}
	})

	t.Run("HTTP/2 off", func(t *testing.T) {
		svc := caller(t, "CLIENT_TLS_ENABLED", "true", "CLIENT_TLS_CA_FILE", meshBundle,
			"CLIENT_TLS_CERT_FILE", gw.cert, "CLIENT_TLS_KEY_FILE", gw.key, "CLIENT_LEDGER_HTTP2", "false")
		c := svc.Client("ledger")
		start(t, svc)
		_, body, err := call(ctx, c, "http://ledger/who")
		if err != nil || body != "spiffe://mesh.test/gateway HTTP/1.1" {
			t.Fatalf("got %q, %v", body, err)
		}
	})

	for _, tc := range []struct {
		name string
		kv   []string
		want string // in the error
	}{
		// With TLS 1.3 the client learns of the refusal after its handshake, as an alert on the
		// first read or as a closed connection, depending on timing.
		{"no client certificate", []string{"CLIENT_TLS_ENABLED", "true", "CLIENT_TLS_CA_FILE", meshBundle}, ""},
		{"server signed by an unknown CA", []string{"CLIENT_TLS_ENABLED", "true", "CLIENT_TLS_CA_FILE", otherBundle,
			"CLIENT_TLS_CERT_FILE", gw.cert, "CLIENT_TLS_KEY_FILE", gw.key}, "certificate signed by unknown authority"},
		{"wrong server name", []string{"CLIENT_TLS_ENABLED", "true", "CLIENT_TLS_CA_FILE", meshBundle,
			"CLIENT_TLS_CERT_FILE", gw.cert, "CLIENT_TLS_KEY_FILE", gw.key, "CLIENT_PRICING_TLS_SERVER_NAME", "billing"}, "billing"},
		{"TLS not enabled", []string{"CLIENT_TLS_CA_FILE", meshBundle, "CLIENT_TLS_CERT_FILE", gw.cert, "CLIENT_TLS_KEY_FILE", gw.key},
			"400"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := caller(t, tc.kv...)
			c := svc.Client("pricing")
			start(t, svc)
			res, body, err := call(ctx, c, "http://pricing/who")
			if err == nil && res.StatusCode == http.StatusOK {
				t.Fatalf("call succeeded: %q", body)
			}
			got := fmt.Sprint(err)
			if err == nil {
				got = fmt.Sprint(res.StatusCode)
			}
			if !strings.Contains(got, tc.want) {
				t.Fatalf("got %s, want it to mention %q", got, tc.want)
			}
			t.Logf("refused: %s", got)
		})
	}
}

// Bad client TLS settings fail New (the shared ones) or Run (a dependency's), with every problem
// named by its variable.
func TestClientTLSConfigErrors(t *testing.T) {
	_, err := chassis.New("gw", chassis.WithEnv(env("CLIENT_TLS_CERT_FILE", "/x.crt", "CLIENT_TLS_MIN_VERSION", "1.1")))
	var ce *config.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), `CLIENT_TLS_MIN_VERSION="1.1"`) {
		t.Fatalf("New = %v", err)
	}
	_, err = chassis.New("gw", chassis.WithEnv(env("CLIENT_TLS_CERT_FILE", "/x.crt")))
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "CLIENT_TLS_CERT_FILE and CLIENT_TLS_KEY_FILE must be set together") {
		t.Fatalf("New = %v", err)
	}

	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	svc, err := chassis.New("gw", chassis.WithEnv(env("DISCOVERY_STATIC_PRICING", "127.0.0.1:1",
		"DISCOVERY_STATIC_STOCK", "127.0.0.1:1", "DISCOVERY_STATIC_INVENTORY", "127.0.0.1:1",
		"CLIENT_PRICING_TLS_CERT_FILE", "/x.crt", "CLIENT_STOCK_MAX_IDLE_CONNS", "0",
		"CLIENT_INVENTORY_TLS_CA_FILE", missing)), chassis.WithoutSignals())
	if err != nil {
		t.Fatal(err)
	}
	svc.Client("pricing")
	svc.Client("stock")
	svc.Client("inventory")
	err = svc.Run(context.Background())
	if !errors.As(err, &ce) {
		t.Fatalf("Run = %v, want a *config.Error", err)
	}
	for _, want := range []string{
		"CLIENT_PRICING_TLS_CERT_FILE and CLIENT_PRICING_TLS_KEY_FILE must be set together",
		`CLIENT_STOCK_MAX_IDLE_CONNS="0": must be at least 1`,
		"CLIENT_INVENTORY_TLS_*: tls: stat " + missing,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run's error does not mention %q:\n%v", want, err)
		}
	}
}

// The certificates of both services and the CA they trust are rotated on disk while a bounded load
// runs: first the CA bundle gains the new CA, then each service's certificate and key are replaced
// by ones the new CA signed (key first, so the reloaders also meet a mismatched pair). Not one
// request fails, retries off, and the new certificates are seen in use on both sides: the caller
// sees the callee's new certificate, the callee the caller's.
func TestCertificateRotationUnderLoad(t *testing.T) {
	dir := t.TempDir()
	oldCA, newCA := newTestCA(t, "CA 2025"), newTestCA(t, "CA 2026")
	caFile := filepath.Join(dir, "ca.pem")
	writeAtomic(t, caFile, bundle(oldCA))
	oldServer, newServer := oldCA.issue(t, "pricing"), newCA.issue(t, "pricing")
	oldClient, newClient := oldCA.issue(t, "spiffe://mesh.test/gateway"), newCA.issue(t, "spiffe://mesh.test/gateway")
	serverFiles, clientFiles := oldServer.write(t, dir, "server"), oldClient.write(t, dir, "client")

	var (
		seenMu       sync.Mutex
		clientSerial = map[string]int{} // client certificates seen by the callee
		newClientIn  = make(chan struct{})
		once         sync.Once
		calls        atomic.Int64
	)
	handler := func(w http.ResponseWriter, r *http.Request) {
		if n := calls.Add(1); n%4 == 0 {
			// Churn: a new connection (and handshake) every few calls, as deploys and idle
			// timeouts cause in production.
			w.Header().Set("Connection", "close")
		}
		serial := r.TLS.PeerCertificates[0].SerialNumber.String()
		seenMu.Lock()
		clientSerial[serial]++
		seenMu.Unlock()
		if serial == newClient.serial.String() {
			once.Do(func() { close(newClientIn) })
		}
		io.WriteString(w, "ok")
	}
	pricing := tlsCallee(t, "pricing", serverFiles, caFile, handler, "TLS_RELOAD_INTERVAL", "0s", "SHED_ENABLED", "false")
	svc, err := chassis.New("gateway", chassis.WithEnv(env(
		"DISCOVERY_STATIC_PRICING", pricing.Addr(),
		"CLIENT_TLS_ENABLED", "true", "CLIENT_TLS_CA_FILE", caFile,
		"CLIENT_TLS_CERT_FILE", clientFiles.cert, "CLIENT_TLS_KEY_FILE", clientFiles.key,
		"CLIENT_TLS_RELOAD_INTERVAL", "0s",
		// Every failed attempt must show: no retry, no breaker; and no deadline but the test's, so
		// that a slow machine does not count as a failed rotation.
		"CLIENT_PRICING_RETRIES", "0", "CLIENT_PRICING_DEPENDENCY_BREAKER_RATE", "0",
		"CLIENT_PRICING_TIMEOUT", "0", "CLIENT_PRICING_ATTEMPT_TIMEOUT", "0",
		"CLIENT_PRICING_BREAKER_FAILURES", "0")), chassis.WithoutSignals())
	if err != nil {
		t.Fatal(err)
	}
	client := svc.Client("pricing")
	start(t, svc)

	const workers, maxCalls, step = 8, 6000, 200
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		done         milestones
		failed       atomic.Int64
		firstErr     atomic.Value
		newServerOut = make(chan struct{})
		onceServer   sync.Once
		stop         = make(chan struct{})
		wg           sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for done.count() < maxCalls {
				select {
				case <-stop:
					return
				default:
				}
				res, body, err := call(ctx, client, "http://pricing/who")
				switch {
				case err != nil:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				case res.StatusCode != http.StatusOK || body != "ok":
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %q", res.StatusCode, body))
				case res.TLS.PeerCertificates[0].SerialNumber.Cmp(newServer.serial) == 0:
					onceServer.Do(func() { close(newServerOut) })
				}
				done.add()
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	wait := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-finished:
			t.Fatalf("the load ended (%d calls) before %s", done.count(), what)
		case <-ctx.Done():
			t.Fatalf("%s: %v after %d calls", what, ctx.Err(), done.count())
		}
	}
	defer func() { close(stop); <-finished }()

	// Every 4th call closes its connection, so each step of 200 calls makes ~50 handshakes, each
	// of which checks the files (reload intervals 0): the step before is in effect on both sides.
	wait("warm-up", done.reach(step))
	writeAtomic(t, caFile, bundle(oldCA, newCA))
	wait("the new CA", done.reach(done.count()+step))
	newServer.replace(t, serverFiles)
	newClient.replace(t, clientFiles)
	wait("the callee's new certificate in use", newServerOut)
	wait("the caller's new certificate in use", newClientIn)
	wait("new certificates only", done.reach(done.count()+step))
	writeAtomic(t, caFile, bundle(newCA)) // the old CA retires
	wait("the old CA retired", done.reach(done.count()+step))
	close(stop)
	<-finished
	stop = make(chan struct{}) // for the deferred close

	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d calls failed during the rotation; first: %v", n, done.count(), firstErr.Load())
	}
	seenMu.Lock()
	defer seenMu.Unlock()
	t.Logf("%d calls, 0 failed; client certificates seen by the callee (serial: calls): %v; old %s, new %s",
		done.count(), clientSerial, oldClient.serial, newClient.serial)
	if clientSerial[oldClient.serial.String()] == 0 {
		t.Error("the callee never saw the first client certificate")
	}
}

// milestones counts calls and lets a test wait for a count without polling.
type milestones struct {
	mu    sync.Mutex
	n     int64
	waits map[int64]chan struct{}
}

func (m *milestones) add() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n++
	for at, ch := range m.waits {
		if m.n >= at {
			close(ch)
			delete(m.waits, at)
		}
	}
}

func (m *milestones) count() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}

// reach returns a channel closed once the count is at least n.
func (m *milestones) reach(n int64) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := make(chan struct{})
	if m.n >= n {
		close(ch)
		return ch
	}
	if m.waits == nil {
		m.waits = map[int64]chan struct{}{}
	}
	if old, ok := m.waits[n]; ok {
		return old
	}
	m.waits[n] = ch
	return ch
}
