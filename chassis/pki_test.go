package chassis_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test: loopback only, nothing leaves the process.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serials atomic.Int64 // distinct serial numbers, so that a test can tell certificates apart

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serials.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// leaf is an issued certificate and its key, PEM encoded.
type leaf struct {
	serial   *big.Int
	certPEM  []byte
	keyPEM   []byte
	identity string
}

// issue signs a certificate usable by servers and clients, for identity: a spiffe:// URI or a DNS
// name. It has no IP address: a client must verify the service name, not the address it dialled.
func (ca *testCA) issue(t *testing.T, identity string) leaf {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial := big.NewInt(serials.Add(1))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: identity},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if u, err := url.Parse(identity); err == nil && u.Scheme == "spiffe" {
		tmpl.URIs = []*url.URL{u}
	} else {
		tmpl.DNSNames = []string{identity}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return leaf{
		serial:   serial,
		certPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		identity: identity,
	}
}

// files are where a service finds its certificate and key.
type files struct{ cert, key string }

// write puts l in dir as <name>.crt and <name>.key.
func (l leaf) write(t *testing.T, dir, name string) files {
	t.Helper()
	f := files{cert: filepath.Join(dir, name+".crt"), key: filepath.Join(dir, name+".key")}
	l.replace(t, f)
	return f
}

// replace swaps the files for l's the way a rotation does, each file atomically (write, then
// rename): the key first, then the certificate. In between, the pair does not match, which the
// reloaders must survive by keeping what they had.
func (l leaf) replace(t *testing.T, f files) {
	t.Helper()
	writeAtomic(t, f.key, l.keyPEM)
	writeAtomic(t, f.cert, l.certPEM)
}

func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// newMesh makes a CA and a directory holding its certificate as ca.pem.
func newMesh(t *testing.T, name string) (ca *testCA, dir, caFile string) {
	t.Helper()
	dir = t.TempDir()
	ca = newTestCA(t, name)
	caFile = filepath.Join(dir, "ca.pem")
	writeAtomic(t, caFile, bundle(ca))
	return ca, dir, caFile
}

// bundle is the PEM concatenation of the CAs' certificates.
func bundle(cas ...*testCA) []byte {
	var b []byte
	for _, ca := range cas {
		b = append(b, ca.pem...)
	}
	return b
}
