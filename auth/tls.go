package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// TLSConfig configures the server's certificate and, for mutual TLS, how clients are verified.
// The tags are github.com/kelseyhightower/envconfig's; embed it anonymously in a service's config.
type TLSConfig struct {
	CertFile       string        `envconfig:"TLS_CERT_FILE" desc:"PEM certificate chain of the server; setting it turns TLS on"`
	KeyFile        string        `envconfig:"TLS_KEY_FILE" desc:"PEM private key of the server certificate"`
	ClientCAFile   string        `envconfig:"TLS_CLIENT_CA_FILE" desc:"PEM bundle of CAs that sign client certificates (mutual TLS)"`
	ClientAuth     ClientAuth    `envconfig:"TLS_CLIENT_AUTH" default:"none" desc:"client certificates: none, request, require, verify_if_given or require_and_verify (default require_and_verify when TLS_CLIENT_CA_FILE is set)"`
	ReloadInterval time.Duration `envconfig:"TLS_RELOAD_INTERVAL" default:"30s" desc:"how often, at most, the files are checked for changes (checked on handshakes; 0 checks on every handshake)"`
	MinVersion     string        `envconfig:"TLS_MIN_VERSION" default:"1.2" desc:"oldest TLS version accepted: 1.2 or 1.3"`
}

// Enabled reports whether TLS is configured.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" }

// Validate reports every problem at once.
func (c TLSConfig) Validate() error {
	var errs []error
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("TLS_CERT_FILE and TLS_KEY_FILE must be set together"))
	}
	if c.ClientCAFile != "" && c.CertFile == "" {
		errs = append(errs, errors.New("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE"))
	}
	if c.ClientAuth >= ClientAuth(tls.VerifyClientCertIfGiven) && c.ClientCAFile == "" {
		errs = append(errs, fmt.Errorf("TLS_CLIENT_AUTH=%s needs TLS_CLIENT_CA_FILE", c.ClientAuth))
	}
	if c.MinVersion != "" && c.MinVersion != "1.2" && c.MinVersion != "1.3" {
		errs = append(errs, fmt.Errorf("TLS_MIN_VERSION=%q: use 1.2 or 1.3", c.MinVersion))
	}
	if c.ReloadInterval < 0 {
		errs = append(errs, errors.New("TLS_RELOAD_INTERVAL must not be negative"))
	}
	return errors.Join(errs...)
}

// ClientAuth is a tls.ClientAuthType that decodes from the environment.
type ClientAuth tls.ClientAuthType

var clientAuthNames = map[string]tls.ClientAuthType{
	"none":               tls.NoClientCert,
	"request":            tls.RequestClientCert,
	"require":            tls.RequireAnyClientCert,
	"verify_if_given":    tls.VerifyClientCertIfGiven,
	"require_and_verify": tls.RequireAndVerifyClientCert,
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (a *ClientAuth) UnmarshalText(b []byte) error {
	t, ok := clientAuthNames[strings.ToLower(strings.TrimSpace(string(b)))]
	if !ok {
		return fmt.Errorf("%q: use none, request, require, verify_if_given or require_and_verify", b)
	}
	*a = ClientAuth(t)
	return nil
}

// String returns the environment form.
func (a ClientAuth) String() string {
	for k, v := range clientAuthNames {
		if ClientAuth(v) == a {
			return k
		}
	}
	return "unknown"
}

// Reloader serves the certificate, key and client CAs of a TLSConfig and reloads them when the
// files change, without a restart: on a handshake, at most once per ReloadInterval, it compares the
// files' modification times and sizes and re-reads them if any changed. A file that fails to load
// (half-written during a rotation, for example) leaves the previous material in use and is tried
// again at the next check; Err reports the failure. No goroutine is involved. A Reloader is safe
// for concurrent use.
type Reloader struct {
	cfg      TLSConfig
	now      func() time.Time
	interval time.Duration
	auth     tls.ClientAuthType
	min      uint16

	current atomic.Pointer[tls.Config]
	watch   fileWatch
}

// NewReloader loads cfg's files and returns a Reloader, or the error that makes them unusable. Each
// file must be a regular file of at most 1 MiB (a device, a FIFO or a larger file is refused before
// anything is read); file errors are *config.Problem naming the variable and the path, never the
// content.
func NewReloader(cfg TLSConfig, opts ...Option) (*Reloader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !cfg.Enabled() {
		return nil, errors.New("auth: TLS_CERT_FILE and TLS_KEY_FILE are not set")
	}
	o := newOptions(opts)
	r := &Reloader{cfg: cfg, auth: tls.ClientAuthType(cfg.ClientAuth), min: tls.VersionTLS12}
	r.watch = fileWatch{now: o.now, interval: cfg.ReloadInterval, stamp: r.stampFiles, read: r.read}
	if cfg.MinVersion == "1.3" {
		r.min = tls.VersionTLS13
	}
	if cfg.ClientCAFile != "" && cfg.ClientAuth == ClientAuth(tls.NoClientCert) {
		r.auth = tls.RequireAndVerifyClientCert
	}
	if err := r.watch.start(); err != nil {
		return nil, err
	}
	return r, nil
}

// TLSConfig returns the tls.Config to give http.Server.TLSConfig. Each handshake gets the current
// certificate and client CAs.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: r.min,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			r.watch.maybeReload()
			return r.current.Load(), nil
		},
	}
}

// Err returns the error of the last reload attempt, nil if it succeeded.
func (r *Reloader) Err() error { return r.watch.Err() }

// Reload re-reads the files now, whether or not they changed.
func (r *Reloader) Reload() error { return r.watch.Reload() }

var fileVars = [...]string{"TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE"}

func (r *Reloader) stampFiles() (string, error) {
	files := []string{r.cfg.CertFile, r.cfg.KeyFile, r.cfg.ClientCAFile}
	return fileStamp(files, func(i int, err error) error { return fileProblem(fileVars[i], files[i], osError(err)) })
}

// read loads the certificate and the client CAs; the fileWatch calls it with its lock held.
func (r *Reloader) read() error {
	certPEM, err := readFile("TLS_CERT_FILE", r.cfg.CertFile, maxPEMBytes)
	if err != nil {
		return err
	}
	keyPEM, err := readFile("TLS_KEY_FILE", r.cfg.KeyFile, maxPEMBytes)
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fileProblem("TLS_CERT_FILE", r.cfg.CertFile, fmt.Errorf("with TLS_KEY_FILE=%q: %w", r.cfg.KeyFile, err))
	}
	c := &tls.Config{
		MinVersion:   r.min,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   r.auth,
	}
	if r.cfg.ClientCAFile != "" {
		pem, err := readFile("TLS_CLIENT_CA_FILE", r.cfg.ClientCAFile, maxPEMBytes)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fileProblem("TLS_CLIENT_CA_FILE", r.cfg.ClientCAFile, errors.New("no PEM certificates"))
		}
		c.ClientCAs = pool
	}
	r.current.Store(c)
	return nil
}

// PeerIdentity is middleware that puts the verified client certificate's identity in the request
// context as a Principal (Method MethodMTLS). Only certificates that chained to the client CAs count
// (VerifiedChains); a request without one passes through anonymously, so combine it with
// TLS_CLIENT_AUTH=require_and_verify or an authorization check.
func PeerIdentity(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		cert := r.TLS.VerifiedChains[0][0]
		p := &Principal{
			Subject: CertIdentity(cert),
			Method:  MethodMTLS,
			Issuer:  cert.Issuer.String(),
			Expires: cert.NotAfter,
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

// CertIdentity names the holder of cert: its first URI SAN (a SPIFFE id, for example), else its
// first DNS SAN, else its subject common name.
func CertIdentity(cert *x509.Certificate) string {
	if len(cert.URIs) > 0 {
		return cert.URIs[0].String()
	}
	if len(cert.DNSNames) > 0 {
		return cert.DNSNames[0]
	}
	return cert.Subject.CommonName
}
