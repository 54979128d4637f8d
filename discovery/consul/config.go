package consul

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// DefaultAddress is the agent address used when CONSUL_HTTP_ADDR is not set.
const DefaultAddress = "127.0.0.1:8500"

// ConfigFromEnv builds an *api.Config from Consul's standard environment variables, read through lookup
// (pass os.LookupEnv in main; tests pass a map). Unlike api.DefaultConfig it never reads the process
// environment itself, and it reports every bad value at once.
//
// Recognized: CONSUL_HTTP_ADDR (host:port, or a URL whose scheme selects http/https; default
// DefaultAddress), CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE, CONSUL_HTTP_AUTH (user[:password]),
// CONSUL_HTTP_SSL, CONSUL_HTTP_SSL_VERIFY, CONSUL_CACERT, CONSUL_CAPATH, CONSUL_CLIENT_CERT,
// CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME, CONSUL_NAMESPACE and CONSUL_PARTITION.
//
// The returned config has its own pooled transport sized for many concurrent blocking queries and no
// overall client timeout (blocking queries are long; the Registry bounds each request with its context).
func ConfigFromEnv(lookup func(string) (string, bool)) (*api.Config, error) {
	get := func(k string) string {
		if lookup == nil {
			return ""
		}
		v, _ := lookup(k)
		return strings.TrimSpace(v)
	}
	var errs []error
	cfg := &api.Config{Address: DefaultAddress, Scheme: "http", Transport: newTransport()}

	if addr := get("CONSUL_HTTP_ADDR"); addr != "" {
		scheme, hostport := "", addr
		if i := strings.Index(addr, "://"); i >= 0 {
			scheme, hostport = strings.ToLower(addr[:i]), strings.TrimSuffix(addr[i+3:], "/")
		}
		switch scheme {
		case "", "http", "https":
		case "unix":
		default:
			errs = append(errs, fmt.Errorf("CONSUL_HTTP_ADDR=%q: scheme %q is not http, https or unix", addr, scheme))
		}
		if scheme != "unix" {
			if _, port, err := net.SplitHostPort(hostport); err != nil {
				errs = append(errs, fmt.Errorf("CONSUL_HTTP_ADDR=%q: not host:port or a URL", addr))
			} else if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
				errs = append(errs, fmt.Errorf("CONSUL_HTTP_ADDR=%q: port %q is not a number in 1-65535", addr, port))
			}
		}
		if scheme == "https" {
			cfg.Scheme = "https"
		}
		if scheme == "unix" {
			cfg.Address = addr
		} else {
			cfg.Address = hostport
		}
	}
	boolVar := func(k string, def bool) bool {
		v := get(k)
		if v == "" {
			return def
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not a boolean (true or false)", k, v))
			return def
		}
		return b
	}
	if boolVar("CONSUL_HTTP_SSL", false) {
		cfg.Scheme = "https"
	}
	cfg.TLSConfig.InsecureSkipVerify = !boolVar("CONSUL_HTTP_SSL_VERIFY", true)
	cfg.TLSConfig.CAFile = get("CONSUL_CACERT")
	cfg.TLSConfig.CAPath = get("CONSUL_CAPATH")
	cfg.TLSConfig.CertFile = get("CONSUL_CLIENT_CERT")
	cfg.TLSConfig.KeyFile = get("CONSUL_CLIENT_KEY")
	cfg.TLSConfig.Address = get("CONSUL_TLS_SERVER_NAME")
	if (cfg.TLSConfig.CertFile == "") != (cfg.TLSConfig.KeyFile == "") {
		errs = append(errs, errors.New("CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together"))
	}
	cfg.Token = get("CONSUL_HTTP_TOKEN")
	cfg.TokenFile = get("CONSUL_HTTP_TOKEN_FILE")
	if auth := get("CONSUL_HTTP_AUTH"); auth != "" {
		user, pass, _ := strings.Cut(auth, ":")
		cfg.HttpAuth = &api.HttpBasicAuth{Username: user, Password: pass}
	}
	cfg.Namespace = get("CONSUL_NAMESPACE")
	cfg.Partition = get("CONSUL_PARTITION")
	if len(errs) > 0 {
		return nil, fmt.Errorf("consul: config: %w", errors.Join(errs...))
	}
	return cfg, nil
}

// newTransport is a pooled transport like api.DefaultConfig's, with room for one idle connection per
// watched service so blocking queries do not redial after every response.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 128
	t.IdleConnTimeout = 90 * time.Second
	return t
}
