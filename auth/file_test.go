package auth_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/internal/hostilefile"
)

// unsafeFiles are paths a file variable must refuse at once: a device that never ends, a FIFO
// nobody writes, a directory, a file over the limit, a missing file, and a file that is not a key
// set. Each file's content holds marker, which no message may show.
func unsafeFiles(t *testing.T, marker string) map[string]string {
	dir := t.TempDir()
	f := hostilefile.Make(t, dir, marker)
	return map[string]string{
		"/dev/zero": "/dev/zero", "FIFO": f.FIFO, "directory": dir, "over 1 MiB": f.Big,
		"missing": filepath.Join(dir, "nope"), "not JSON nor PEM": f.Shadow,
	}
}

// TestUnsafeFilesAreRefused is issue #13.4 for auth: AUTH_JWKS_FILE, TLS_CERT_FILE, TLS_KEY_FILE
// and TLS_CLIENT_CA_FILE pointing at /dev/zero, a FIFO, a directory or an oversized file fail
// within a second (they used to exhaust memory or hang), as a *config.Problem naming the variable,
// without the content.
func TestUnsafeFilesAreRefused(t *testing.T) {
	const marker = "SECRET-CONTENT-7f3a"
	certFile, keyFile, _ := writeTestPKI(t)
	for name, path := range unsafeFiles(t, marker) {
		cases := []struct {
			variable string
			load     func() error
		}{
			{"AUTH_JWKS_FILE", func() error { _, _, err := auth.Config{JWKSFile: path}.New(); return err }},
			{"TLS_CERT_FILE", func() error { _, err := auth.NewReloader(auth.TLSConfig{CertFile: path, KeyFile: keyFile}); return err }},
			{"TLS_KEY_FILE", func() error {
				_, err := auth.NewReloader(auth.TLSConfig{CertFile: certFile, KeyFile: path})
				return err
			}},
			{"TLS_CLIENT_CA_FILE", func() error {
				_, err := auth.NewReloader(auth.TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFile: path})
				return err
			}},
		}
		for _, c := range cases {
			t.Run(c.variable+" "+name, func(t *testing.T) {
				t0 := time.Now()
				err := c.load()
				if d := time.Since(t0); d > time.Second {
					t.Errorf("took %v", d)
				}
				var p *config.Problem
				if !errors.As(err, &p) {
					t.Fatalf("error %v (%T), want a *config.Problem", err, err)
				}
				if name == "not JSON nor PEM" && c.variable == "TLS_KEY_FILE" {
					// The pair is checked together and reported under TLS_CERT_FILE.
					if p.Var != "TLS_CERT_FILE" || !strings.Contains(err.Error(), "TLS_KEY_FILE") {
						t.Errorf("problem %v", err)
					}
				} else if p.Var != c.variable || p.Value != path {
					t.Errorf("problem names %s=%q: %v", p.Var, p.Value, err)
				}
				t.Log(err)
				if strings.Contains(err.Error(), marker) || strings.Contains(err.Error(), "$6$") {
					t.Errorf("the message shows the file's content: %v", err)
				}
			})
		}
	}
}

// writeTestPKI writes a server certificate, its key and a CA bundle.
func writeTestPKI(t *testing.T) (certFile, keyFile, caFile string) {
	t.Helper()
	c := newCA(t, "test CA")
	certPEM, keyPEM := c.issue(t, 2, false, "")
	dir := t.TempDir()
	certFile, keyFile, caFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "ca.pem")
	now := time.Now()
	write(t, certFile, certPEM, now)
	write(t, keyFile, keyPEM, now)
	write(t, caFile, c.pem, now)
	if _, err := auth.NewReloader(auth.TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}); err != nil {
		t.Fatalf("the good files do not load: %v", err)
	}
	return certFile, keyFile, caFile
}

// TestKeyFileSkipsBadKeys: AUTH_JWKS_FILE with bad keys beside a good one verifies the good key's
// tokens and logs the others; a file of bad keys only is a configuration problem.
func TestKeyFileSkipsBadKeys(t *testing.T) {
	key, _ := keys(t)
	bad := badKeys(t)
	dir := t.TempDir()
	mixed, onlyBad := filepath.Join(dir, "mixed.json"), filepath.Join(dir, "bad.json")
	os.WriteFile(mixed, keySet(bad[0], rsaJWK("good", &key.PublicKey), bad[1]), 0o600)
	os.WriteFile(onlyBad, keySet(bad...), 0o600)

	logs := &logRecords{}
	v, jwks, err := auth.Config{JWKSFile: mixed, Algorithms: auth.DefaultAlgorithms}.New(auth.WithLogger(slog.New(logs)))
	if err != nil || jwks != nil {
		t.Fatalf("%v %v", jwks, err)
	}
	if _, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, "good", key, claims(time.Now(), nil))); err != nil {
		t.Fatalf("good key: %v", err)
	}
	if out := logs.String(); !strings.Contains(out, "kid=short") || !strings.Contains(out, "kid=off-curve") {
		t.Errorf("bad keys not logged:\n%s", out)
	}

	_, _, err = auth.Config{JWKSFile: onlyBad, Algorithms: auth.DefaultAlgorithms}.New()
	var p *config.Problem
	if !errors.As(err, &p) || p.Var != "AUTH_JWKS_FILE" || !strings.Contains(err.Error(), "no usable signature key") || !strings.Contains(err.Error(), "1024 bits") {
		t.Fatalf("a file of bad keys only: %v", err)
	}
}
