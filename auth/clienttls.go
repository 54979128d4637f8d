package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/cloudchassis/kit/config"
)

// ClientTLSConfig configures the TLS of outgoing calls: the CAs that sign the servers' certificates,
// the name to verify in them and, for mutual TLS, the certificate to present. The tags are
// envconfig's without a prefix: chassis reads it as CLIENT_TLS_* (every dependency) and
// CLIENT_<NAME>_TLS_* (one dependency, over the shared values). There is deliberately no setting
// that skips verification.
type ClientTLSConfig struct {
	Enabled        bool          `envconfig:"ENABLED" desc:"call over TLS even when the URL says http:// (it is sent as https://); https:// URLs always use TLS"`
	CAFile         string        `envconfig:"CA_FILE" desc:"PEM bundle of the CAs that sign the servers' certificates; default the system roots"`
	CertFile       string        `envconfig:"CERT_FILE" desc:"PEM certificate chain presented to servers that ask for one (mutual TLS)"`
	KeyFile        string        `envconfig:"KEY_FILE" desc:"PEM private key of the client certificate"`
	ServerName     string        `envconfig:"SERVER_NAME" desc:"name the server certificate must carry; default the service name in the URL (pricing for https://pricing/...)"`
	ReloadInterval time.Duration `envconfig:"RELOAD_INTERVAL" default:"30s" validate:"gte=0" desc:"how often, at most, the files are checked for changes (on new connections; 0 checks on every one)"`
	MinVersion     string        `envconfig:"MIN_VERSION" default:"1.2" validate:"oneof=1.2 1.3" desc:"oldest TLS version used: 1.2 or 1.3"`
}

// HasFiles reports whether any file is configured (a CA bundle or a client certificate).
func (c ClientTLSConfig) HasFiles() bool {
	return c.CAFile != "" || c.CertFile != "" || c.KeyFile != ""
}

// Check reports every problem of c at once. prefix names the variables in the messages:
// "CLIENT_TLS" gives CLIENT_TLS_CERT_FILE; "" gives CERT_FILE.
func (c ClientTLSConfig) Check(prefix string) error {
	name := func(v string) string {
		if prefix == "" {
			return v
		}
		return prefix + "_" + v
	}
	var errs []error
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, fmt.Errorf("%s and %s must be set together", name("CERT_FILE"), name("KEY_FILE")))
	}
	if c.MinVersion != "" && c.MinVersion != "1.2" && c.MinVersion != "1.3" {
		errs = append(errs, fmt.Errorf("%s=%q: use 1.2 or 1.3", name("MIN_VERSION"), c.MinVersion))
	}
	if c.ReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("%s must not be negative", name("RELOAD_INTERVAL")))
	}
	return errors.Join(errs...)
}

// ClientReloader holds the CA pool and client certificate of a ClientTLSConfig and reloads them when
// the files change, like Reloader does for a server: when a connection is made or a server asks
// for the client certificate, at most once per ReloadInterval, it compares the files' modification
// times and sizes and re-reads them if any changed. A file that fails to load (half-written during
// a rotation) leaves the previous material in use and is tried again at the next check; Err reports
// the failure. Connections already open keep the certificates they were made with. No goroutine is
// involved; a ClientReloader is safe for concurrent use.
type ClientReloader struct {
	cfg      ClientTLSConfig
	now      func() time.Time
	interval time.Duration
	min      uint16

	current atomic.Pointer[clientMaterial]
	watch   fileWatch
}

type clientMaterial struct {
	roots *x509.CertPool   // nil: the system roots
	cert  *tls.Certificate // nil: no client certificate
}

// NewClientReloader loads cfg's files and returns a ClientReloader, or the error that makes them
// unusable. A cfg without files is valid: it verifies servers against the system roots and
// presents no certificate.
func NewClientReloader(cfg ClientTLSConfig, opts ...Option) (*ClientReloader, error) {
	if err := cfg.Check(""); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	o := newOptions(opts)
	r := &ClientReloader{cfg: cfg, min: tls.VersionTLS12}
	r.watch = fileWatch{now: o.now, interval: cfg.ReloadInterval, read: r.read, stamp: func() (string, error) {
		stamp, err := fileStamp([]string{cfg.CAFile, cfg.CertFile, cfg.KeyFile}, nil)
		if err != nil {
			return "", fmt.Errorf("tls: %w", err)
		}
		return stamp, nil
	}}
	if cfg.MinVersion == "1.3" {
		r.min = tls.VersionTLS13
	}
	if err := r.watch.start(); err != nil {
		return nil, err
	}
	return r, nil
}

// Config returns a tls.Config for one new connection to a server that must present a certificate
// for serverName: the current CA pool, the current client certificate (through
// GetClientCertificate, so that a certificate rotated since is used on the next handshake) and
// nextProtos for ALPN. Call it per connection, as Dialer does: the CA pool is fixed in the result.
func (r *ClientReloader) Config(serverName string, nextProtos ...string) *tls.Config {
	r.maybeReload()
	m := r.current.Load()
	c := &tls.Config{
		MinVersion: r.min,
		ServerName: serverName,
		RootCAs:    m.roots,
		NextProtos: nextProtos,
	}
	if m.cert != nil {
		c.GetClientCertificate = r.clientCertificate
	}
	return c
}

func (r *ClientReloader) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	r.maybeReload()
	if c := r.current.Load().cert; c != nil {
		return c, nil
	}
	return &tls.Certificate{}, nil // none: the server decides whether that is acceptable
}

// Err returns the error of the last reload attempt, nil if it succeeded.
func (r *ClientReloader) Err() error { return r.watch.Err() }

// Reload re-reads the files now, whether or not they changed.
func (r *ClientReloader) Reload() error { return r.watch.Reload() }

func (r *ClientReloader) maybeReload() {
	if r.cfg.HasFiles() {
		r.watch.maybeReload()
	}
}

// read loads the client certificate and the CA pool; the fileWatch calls it with its lock held.
func (r *ClientReloader) read() error {
	var m clientMaterial
	if r.cfg.CertFile != "" {
		certPEM, err := config.ReadFileBounded(r.cfg.CertFile, maxPEMBytes)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		keyPEM, err := config.ReadFileBounded(r.cfg.KeyFile, maxPEMBytes)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("tls: %s / %s: %w", r.cfg.CertFile, r.cfg.KeyFile, err)
		}
		m.cert = &cert
	}
	if r.cfg.CAFile != "" {
		pem, err := config.ReadFileBounded(r.cfg.CAFile, maxPEMBytes)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		m.roots = x509.NewCertPool()
		if !m.roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("tls: %s: no PEM certificates", r.cfg.CAFile)
		}
	}
	r.current.Store(&m)
	return nil
}

// Dialer makes client TLS connections with the current material of a ClientReloader: each dial
// gets a fresh tls.Config from Config, so CA and certificate rotations apply to new connections
// without a restart. Use DialTLSContext as http.Transport.DialTLSContext; with
// ForceAttemptHTTP2 and "h2" in NextProtos the transport speaks HTTP/2 to servers that offer it.
// A Dialer is safe for concurrent use.
type Dialer struct {
	// Reloader supplies the CAs and the client certificate. Required.
	Reloader *ClientReloader
	// ServerName is the name verified in the server certificate. Required: the instance address
	// dialled is usually an IP address, which is not what the certificate names.
	ServerName string
	// NextProtos are the ALPN protocols offered, "h2" first for HTTP/2.
	NextProtos []string
	// Dial opens the underlying connection; nil uses a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DialTLSContext dials addr and completes a TLS handshake before ctx ends. The connection is a
// *tls.Conn, as http.Transport needs to read the negotiated protocol.
func (d *Dialer) DialTLSContext(ctx context.Context, network, addr string) (net.Conn, error) {
	dial := d.Dial
	if dial == nil {
		var nd net.Dialer
		dial = nd.DialContext
	}
	raw, err := dial(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, d.Reloader.Config(d.ServerName, d.NextProtos...))
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("tls handshake with %s (%s): %w", addr, d.ServerName, err)
	}
	return conn, nil
}
