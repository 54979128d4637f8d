package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cloudchassis/kit/config"
)

// Settings is the connection to etcd and the registration settings, as a service reads them from the
// environment (chassis embeds it in its Settings). The TLS and authentication variables have the
// names etcdctl reads, so one environment serves the service and `etcdctl` run beside it
// (ETCDCTL_ENDPOINTS aside: etcdctl's name for ETCD_ENDPOINTS).
type Settings struct {
	Endpoints   []string      `envconfig:"ETCD_ENDPOINTS" desc:"etcd client endpoints (host:port or http(s)://host:port, comma-separated); required with DISCOVERY=etcd"`
	Prefix      string        `envconfig:"ETCD_PREFIX" default:"/chassis" desc:"root of the keys discovery writes and watches: <prefix>/services/<name>/<id>"`
	LeaseTTL    time.Duration `envconfig:"ETCD_LEASE_TTL" default:"10s" desc:"lease of the registration: a process that dies without deregistering stays listed this long (at least 2s)"`
	Consistency string        `envconfig:"ETCD_CONSISTENCY" default:"linearizable" lower:"true" validate:"oneof=linearizable serializable" desc:"read mode of discovery watches: linearizable (through the leader; a member cut off from the quorum reports an error and the last known list is kept: CP) or serializable (any member answers, possibly stale during a partition: AP)"`
	DialTimeout time.Duration `envconfig:"ETCD_DIAL_TIMEOUT" default:"5s" desc:"limit for connecting to an etcd endpoint"`
	CACert      string        `envconfig:"ETCDCTL_CACERT" desc:"CA bundle (PEM file) that verifies etcd's server certificates; setting it, or ETCDCTL_CERT, turns TLS on"`
	Cert        string        `envconfig:"ETCDCTL_CERT" desc:"client certificate (PEM file) for etcd's client-cert authentication; needs ETCDCTL_KEY"`
	Key         string        `envconfig:"ETCDCTL_KEY" desc:"private key (PEM file) of ETCDCTL_CERT"`
	User        string        `envconfig:"ETCDCTL_USER" desc:"etcd user name, or user:password as etcdctl accepts it"`
	Password    config.Secret `envconfig:"ETCDCTL_PASSWORD" desc:"password of ETCDCTL_USER"`
}

// Check reports every problem of c, joined. Call it when etcd is in use (an unset ETCD_ENDPOINTS is
// a problem only then).
func (c *Settings) Check() error {
	var errs []error
	if len(c.Endpoints) == 0 {
		errs = append(errs, &config.Problem{Var: "ETCD_ENDPOINTS",
			Err: errors.New("required with DISCOVERY=etcd: the etcd client endpoints, e.g. 10.0.0.1:2379,10.0.0.2:2379")})
	}
	for _, e := range c.Endpoints {
		if h := strings.TrimPrefix(strings.TrimPrefix(e, "https://"), "http://"); h == "" || strings.Contains(h, "/") || !strings.Contains(h, ":") {
			errs = append(errs, config.Invalid("ETCD_ENDPOINTS", strings.Join(c.Endpoints, ","), fmt.Sprintf("%q is not host:port or http(s)://host:port", e)))
		}
	}
	if c.LeaseTTL != 0 && c.LeaseTTL < 2*time.Second {
		errs = append(errs, config.Invalid("ETCD_LEASE_TTL", c.LeaseTTL.String(), "must be at least 2s"))
	}
	if _, ok := ParseConsistency(c.Consistency); !ok {
		errs = append(errs, config.Invalid("ETCD_CONSISTENCY", c.Consistency, "must be linearizable or serializable"))
	}
	if (c.Cert == "") != (c.Key == "") {
		errs = append(errs, config.Invalid("ETCDCTL_CERT", c.Cert, "ETCDCTL_CERT and ETCDCTL_KEY go together"))
	}
	return errors.Join(errs...)
}

// ClientConfig returns the clientv3 configuration: endpoints, dial timeout, TLS from the PEM files
// and the user's credentials. It reads the certificate files.
func (c *Settings) ClientConfig() (clientv3.Config, error) {
	if err := c.Check(); err != nil {
		return clientv3.Config{}, err
	}
	cc := clientv3.Config{
		DialTimeout:          c.DialTimeout,
		DialKeepAliveTime:    10 * time.Second, // notice a dead connection without waiting for TCP
		DialKeepAliveTimeout: 3 * time.Second,
		Username:             c.User,
		Password:             c.Password.Reveal(),
	}
	if cc.DialTimeout <= 0 {
		cc.DialTimeout = DefaultDialTimeout
	}
	if user, pass, ok := strings.Cut(c.User, ":"); ok && c.Password == "" {
		cc.Username, cc.Password = user, pass
	}
	useTLS := c.CACert != "" || c.Cert != ""
	for _, e := range c.Endpoints {
		useTLS = useTLS || strings.HasPrefix(e, "https://")
		cc.Endpoints = append(cc.Endpoints, strings.TrimPrefix(strings.TrimPrefix(e, "https://"), "http://"))
	}
	if useTLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.CACert != "" {
			pem, err := os.ReadFile(c.CACert)
			if err != nil {
				return clientv3.Config{}, config.Invalid("ETCDCTL_CACERT", c.CACert, err.Error())
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return clientv3.Config{}, config.Invalid("ETCDCTL_CACERT", c.CACert, "no PEM certificate in the file")
			}
		}
		if c.Cert != "" {
			cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
			if err != nil {
				return clientv3.Config{}, config.Invalid("ETCDCTL_CERT", c.Cert, err.Error())
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cc.TLS = tc
	}
	return cc, nil
}
