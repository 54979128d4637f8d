package auth_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudchassis/kit/auth"
)

// A client's certificate and CA bundle are re-read at most once per interval, on new connections;
// a broken key keeps the previous pair in use and is reported.
func TestClientReloaderRotation(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA, otherCA := newCA(t, "server-ca"), newCA(t, "client-ca"), newCA(t, "other-ca")

	scfg := auth.TLSConfig{CertFile: filepath.Join(dir, "s.crt"), KeyFile: filepath.Join(dir, "s.key"), ClientCAFile: filepath.Join(dir, "s-ca.crt")}
	t0 := time.Now().Add(-time.Hour)
	crt, key := serverCA.issue(t, 100, false, "")
	write(t, scfg.CertFile, crt, t0)
	write(t, scfg.KeyFile, key, t0)
	write(t, scfg.ClientCAFile, clientCA.pem, t0)
	sr, err := auth.NewReloader(scfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.TLS.PeerCertificates[0].SerialNumber)
	}))
	srv.TLS = sr.TLSConfig()
	srv.StartTLS()
	t.Cleanup(srv.Close)

	ccfg := auth.ClientTLSConfig{CAFile: filepath.Join(dir, "c-ca.crt"), CertFile: filepath.Join(dir, "c.crt"),
		KeyFile: filepath.Join(dir, "c.key"), ReloadInterval: time.Minute}
	crt, key = clientCA.issue(t, 7, true, "spiffe://shop.test/cart")
	write(t, ccfg.CertFile, crt, t0)
	write(t, ccfg.KeyFile, key, t0)
	write(t, ccfg.CAFile, serverCA.pem, t0)
	clk := newClock()
	cr, err := auth.NewClientReloader(ccfg, auth.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	d := &auth.Dialer{Reloader: cr, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}}
	tr := &http.Transport{DialTLSContext: d.DialTLSContext, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	serial := func() (string, error) {
		res, err := c.Get(srv.URL)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}
	if s, err := serial(); err != nil || s != "7" {
		t.Fatalf("first call: %q %v", s, err)
	}

	t1 := t0.Add(time.Second)
	crt, key = clientCA.issue(t, 8, true, "spiffe://shop.test/cart")
	write(t, ccfg.CertFile, crt, t1)
	write(t, ccfg.KeyFile, key, t1)
	if s, err := serial(); err != nil || s != "7" {
		t.Fatalf("within the interval: %q %v, want the first certificate", s, err)
	}
	clk.Advance(time.Minute)
	if s, err := serial(); err != nil || s != "8" {
		t.Fatalf("after the interval: %q %v, want the new certificate", s, err)
	}

	// A broken key: the previous pair stays, the failure is reported.
	write(t, ccfg.KeyFile, []byte("-----BEGIN EC PRIVATE KEY-----\ngarbage"), t1.Add(time.Second))
	clk.Advance(time.Minute)
	if s, err := serial(); err != nil || s != "8" {
		t.Fatalf("broken rotation: %q %v", s, err)
	}
	if cr.Err() == nil {
		t.Fatal("Err() does not report the failed reload")
	}

	// The CA bundle is reloaded too: trusting only another CA, the server is refused.
	write(t, ccfg.KeyFile, key, t1.Add(2*time.Second))
	write(t, ccfg.CAFile, otherCA.pem, t1.Add(2*time.Second))
	clk.Advance(time.Minute)
	if _, err := serial(); err == nil || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("server of a CA no longer trusted: %v", err)
	}
	if cr.Err() != nil {
		t.Fatalf("Err() = %v after a good reload", cr.Err())
	}
}

func TestClientTLSConfigCheck(t *testing.T) {
	err := auth.ClientTLSConfig{CertFile: "c", MinVersion: "1.0", ReloadInterval: -1}.Check("CLIENT_TLS")
	for _, want := range []string{"CLIENT_TLS_CERT_FILE and CLIENT_TLS_KEY_FILE must be set together",
		`CLIENT_TLS_MIN_VERSION="1.0"`, "CLIENT_TLS_RELOAD_INTERVAL must not be negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check = %v, want %q", err, want)
		}
	}
	if _, err := auth.NewClientReloader(auth.ClientTLSConfig{KeyFile: "k"}); err == nil {
		t.Fatal("a key without a certificate was accepted")
	}
	// Without files: system roots, no client certificate.
	r, err := auth.NewClientReloader(auth.ClientTLSConfig{MinVersion: "1.3"})
	if err != nil {
		t.Fatal(err)
	}
	c := r.Config("pricing", "h2")
	if c.RootCAs != nil || c.GetClientCertificate != nil || c.ServerName != "pricing" || c.MinVersion != 0x0304 || c.NextProtos[0] != "h2" {
		t.Fatalf("Config = %+v", c)
	}
}
