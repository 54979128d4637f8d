package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloudchassis/kit/auth"
)

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *ca {
	t.Helper()
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key))
	return &ca{cert: must(x509.ParseCertificate(der)), key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns PEM certificate and key signed by c.
func (c *ca) issue(t *testing.T, serial int64, client bool, uri string) (certPEM, keyPEM []byte) {
	t.Helper()
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		tmpl.URIs = []*url.URL{must(url.Parse(uri))}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der := must(x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key))
	kder := must(x509.MarshalECPrivateKey(key))
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

func write(t *testing.T, path string, data []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestMutualTLSWithRotation(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA, otherCA := newCA(t, "server-ca"), newCA(t, "client-ca"), newCA(t, "other-ca")
	cfg := auth.TLSConfig{
		CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key"),
		ClientCAFile: filepath.Join(dir, "ca.crt"),
	}
	if err := cfg.ClientAuth.UnmarshalText([]byte("require_and_verify")); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Minute)
	crt, key := serverCA.issue(t, 100, false, "")
	write(t, cfg.CertFile, crt, t0)
	write(t, cfg.KeyFile, key, t0)
	write(t, cfg.ClientCAFile, clientCA.pem, t0)

	r, err := auth.NewReloader(cfg) // ReloadInterval 0: files checked on every handshake
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(auth.PeerIdentity(http.HandlerFunc(whoami)))
	srv.TLS = r.TLSConfig()
	srv.StartTLS()
	t.Cleanup(srv.Close)

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(serverCA.pem)
	client := func(c *ca, uri string) (*http.Client, *tls.Config) {
		tc := &tls.Config{RootCAs: roots}
		if c != nil {
			cp, kp := c.issue(t, 7, true, uri)
			tc.Certificates = []tls.Certificate{must(tls.X509KeyPair(cp, kp))}
		}
		tr := &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 5 * time.Second}, tc
	}
	get := func(c *http.Client) (string, *x509.Certificate, error) {
		resp, err := c.Get(srv.URL)
		if err != nil {
			return "", nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), resp.TLS.PeerCertificates[0], nil
	}

	good, _ := client(clientCA, "spiffe://shop.test/ns/prod/sa/cart")
	body, cert, err := get(good)
	if err != nil {
		t.Fatal(err)
	}
	if body != "spiffe://shop.test/ns/prod/sa/cart via mtls" {
		t.Fatalf("principal = %q", body)
	}
	if cert.SerialNumber.Int64() != 100 {
		t.Fatalf("server serial %v", cert.SerialNumber)
	}
	noCert, _ := client(nil, "")
	if _, _, err := get(noCert); err == nil {
		t.Fatal("client without a certificate was accepted")
	}
	stranger, _ := client(otherCA, "spiffe://evil.test/x")
	if _, _, err := get(stranger); err == nil {
		t.Fatal("client certificate from an unknown CA was accepted")
	}

	// Rotate the server certificate and trust the other CA for clients, without restarting.
	t1 := t0.Add(30 * time.Second)
	crt, key = serverCA.issue(t, 200, false, "")
	write(t, cfg.CertFile, crt, t1)
	write(t, cfg.KeyFile, key, t1)
	write(t, cfg.ClientCAFile, append(append([]byte{}, clientCA.pem...), otherCA.pem...), t1)
	_, cert, err = get(good)
	if err != nil {
		t.Fatal(err)
	}
	if cert.SerialNumber.Int64() != 200 {
		t.Fatalf("after rotation the server still presents serial %v", cert.SerialNumber)
	}
	if body, _, err := get(stranger); err != nil || body != "spiffe://evil.test/x via mtls" {
		t.Fatalf("client of the newly trusted CA: %q %v", body, err)
	}

	// A half-written key keeps the previous certificate in service and is reported.
	write(t, cfg.KeyFile, []byte("-----BEGIN EC PRIVATE KEY-----\ngarbage"), t1.Add(time.Second))
	if _, cert, err = get(good); err != nil || cert.SerialNumber.Int64() != 200 {
		t.Fatalf("broken rotation: %v %v", cert, err)
	}
	if r.Err() == nil {
		t.Fatal("Err() does not report the failed reload")
	}
}

func TestReloaderChecksAtMostOncePerInterval(t *testing.T) {
	dir := t.TempDir()
	sca := newCA(t, "server-ca")
	cfg := auth.TLSConfig{CertFile: filepath.Join(dir, "c"), KeyFile: filepath.Join(dir, "k"), ReloadInterval: time.Minute}
	t0 := time.Now().Add(-time.Hour)
	c1, k1 := sca.issue(t, 1, false, "")
	write(t, cfg.CertFile, c1, t0)
	write(t, cfg.KeyFile, k1, t0)
	clk := newClock()
	r, err := auth.NewReloader(cfg, auth.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	serial := func() int64 {
		c, err := r.TLSConfig().GetConfigForClient(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return must(x509.ParseCertificate(c.Certificates[0].Certificate[0])).SerialNumber.Int64()
	}
	c2, k2 := sca.issue(t, 2, false, "")
	write(t, cfg.CertFile, c2, t0.Add(time.Second))
	write(t, cfg.KeyFile, k2, t0.Add(time.Second))
	if s := serial(); s != 1 {
		t.Fatalf("reloaded before the interval: serial %d", s)
	}
	clk.Advance(time.Minute)
	if s := serial(); s != 2 {
		t.Fatalf("not reloaded after the interval: serial %d", s)
	}
}

func TestTLSConfigValidate(t *testing.T) {
	var ca auth.ClientAuth
	if err := ca.UnmarshalText([]byte("sometimes")); err == nil {
		t.Fatal("bad client auth accepted")
	}
	bad := auth.TLSConfig{CertFile: "x", ClientAuth: auth.ClientAuth(tls.RequireAndVerifyClientCert), MinVersion: "1.0"}
	if err := bad.Validate(); err == nil {
		t.Fatal("invalid config accepted")
	}
}
