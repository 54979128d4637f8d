package chassis

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/cloudchassis/kit/auth"
	"github.com/cloudchassis/kit/discovery/lb"
	"github.com/cloudchassis/kit/telemetry/semconv"
)

// Defaults of TransportConfig.
const (
	// DefaultMaxIdleConns is the number of idle connections kept per instance: enough for the
	// concurrency of a busy service-to-service client, so that connections are reused instead of
	// dialled per call (http.DefaultTransport keeps 2, which at 32 concurrent calls opened 0.84 new
	// connections per request).
	DefaultMaxIdleConns = 256
	// DefaultIdleConnTimeout is how long an idle connection is kept.
	DefaultIdleConnTimeout = 90 * time.Second
	// DefaultDialTimeout bounds a new connection, TLS handshake included.
	DefaultDialTimeout = 5 * time.Second
	// tcpKeepAlive is the TCP keep-alive period of connections to instances (net.Dialer's default).
	tcpKeepAlive = 15 * time.Second
)

// TransportConfig is how a dependency's client connects to its instances and which balancing
// policy picks them. Chassis reads it with the
// prefix CLIENT_<NAME>_ (CLIENT_PRICING_MAX_IDLE_CONNS), after DefaultTransportConfig and
// WithTransport; TLS starts from the shared CLIENT_TLS_* settings and CLIENT_<NAME>_TLS_* override
// them one by one.
type TransportConfig struct {
	MaxIdleConns    int           `envconfig:"MAX_IDLE_CONNS" default:"256" validate:"gte=1" desc:"idle connections kept per instance for reuse; below the calls in flight to one instance, connections are opened and closed per call"`
	IdleConnTimeout time.Duration `envconfig:"IDLE_CONN_TIMEOUT" default:"90s" validate:"gte=0" desc:"an idle connection is closed after this; 0 keeps it until the instance closes it"`
	DialTimeout     time.Duration `envconfig:"DIAL_TIMEOUT" default:"5s" validate:"gte=0" desc:"limit of opening a connection, TLS handshake included; 0 leaves it to the attempt's deadline"`
	HTTP2           bool          `envconfig:"HTTP2" default:"true" desc:"use HTTP/2 with instances that offer it over TLS: one multiplexed connection per instance"`
	LBPolicy        string        `envconfig:"LB_POLICY" desc:"balancing policy of this dependency, by registered name; overrides LB_POLICY and the code's WithBalancer"`

	TLS auth.ClientTLSConfig `envconfig:"TLS"`
}

// DefaultTransportConfig returns the defaults the `default` tags of TransportConfig describe, with
// TLS off (no files, system roots for https:// URLs).
func DefaultTransportConfig() TransportConfig {
	return TransportConfig{
		MaxIdleConns:    DefaultMaxIdleConns,
		IdleConnTimeout: DefaultIdleConnTimeout,
		DialTimeout:     DefaultDialTimeout,
		HTTP2:           true,
		TLS:             auth.ClientTLSConfig{ReloadInterval: 30 * time.Second, MinVersion: "1.2"},
	}
}

// checkLBPolicy reports a policy name that is not registered, listing the known ones.
func checkLBPolicy(name string) error {
	if name == "" || slices.Contains(lb.Policies(), name) {
		return nil
	}
	return fmt.Errorf("not a registered balancing policy; known: %s", strings.Join(lb.Policies(), ", "))
}

// WithTransport adjusts the dependency's transport settings in code. The environment
// (CLIENT_<NAME>_*) still overrides what f sets; f starts from the defaults and CLIENT_TLS_*.
func WithTransport(f func(*TransportConfig)) ClientOption {
	return clientOptionFunc(func(o *clientOptions) { o.transport = append(o.transport, f) })
}

// connMetrics count the connections a dependency's transport opens and holds.
type connMetrics struct {
	opened metric.Int64Counter
	open   metric.Int64UpDownCounter
	plain  metric.AddOption // peer.service, url.scheme=http
	secure metric.AddOption // peer.service, url.scheme=https
	peer   metric.AddOption // peer.service
}

func newConnMetrics(mp metric.MeterProvider, service string) (*connMetrics, error) {
	m := mp.Meter(semconv.ScopeChassis)
	opened, err := m.Int64Counter(semconv.MetricClientConnectionsOpened, metric.WithUnit(semconv.UnitConnection),
		metric.WithDescription("Connections dialled to instances of a dependency, TLS handshake done."))
	if err != nil {
		return nil, err
	}
	open, err := m.Int64UpDownCounter(semconv.MetricClientConnectionsOpen, metric.WithUnit(semconv.UnitConnection),
		metric.WithDescription("Connections to instances of a dependency currently open, idle or in use."))
	if err != nil {
		return nil, err
	}
	peer := attribute.String(semconv.AttrPeerService, service)
	return &connMetrics{
		opened: opened,
		open:   open,
		plain:  metric.WithAttributeSet(attribute.NewSet(peer, attribute.String(semconv.AttrURLScheme, "http"))),
		secure: metric.WithAttributeSet(attribute.NewSet(peer, attribute.String(semconv.AttrURLScheme, "https"))),
		peer:   metric.WithAttributeSet(attribute.NewSet(peer)),
	}, nil
}

// newTransport builds the transport a dependency's requests leave through: connections kept for
// reuse per instance (MaxIdleConns), HTTP/2 with TLS instances that offer it, TLS from the
// dependency's settings with the certificates reloaded on rotation, and every new connection
// counted. HTTP_PROXY and friends are not honoured: calls go straight to the instance the balancer
// picked.
func newTransport(service string, tc TransportConfig, mp metric.MeterProvider) (*http.Transport, http.RoundTripper, error) {
	tr, err := auth.NewClientReloader(tc.TLS)
	if err != nil {
		return nil, nil, err
	}
	m, err := newConnMetrics(mp, service)
	if err != nil {
		return nil, nil, err
	}
	nd := &net.Dialer{Timeout: tc.DialTimeout, KeepAlive: tcpKeepAlive}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		m.open.Add(ctx, 1, m.peer)
		return &countedConn{Conn: c, m: m}, nil
	}
	protos := []string{"http/1.1"}
	if tc.HTTP2 {
		protos = []string{"h2", "http/1.1"}
	}
	serverName := tc.TLS.ServerName
	if serverName == "" {
		serverName = service
	}
	td := &auth.Dialer{Reloader: tr, ServerName: serverName, NextProtos: protos, Dial: dial}
	t := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err == nil {
				m.opened.Add(ctx, 1, m.plain)
			}
			return c, err
		},
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if tc.DialTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.DialTimeout)
				defer cancel()
			}
			c, err := td.DialTLSContext(ctx, network, addr)
			if err == nil {
				m.opened.Add(ctx, 1, m.secure)
			}
			return c, err
		},
		MaxIdleConnsPerHost:   tc.MaxIdleConns,
		IdleConnTimeout:       tc.IdleConnTimeout,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     tc.HTTP2,
	}
	var rt http.RoundTripper = t
	if tc.TLS.Enabled {
		rt = upgradeTransport{t}
	}
	return t, rt, nil
}

// countedConn keeps the open-connections gauge: -1 on the first Close.
type countedConn struct {
	net.Conn
	m      *connMetrics
	closed atomic.Bool
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.m.open.Add(context.Background(), -1, c.m.peer)
	}
	return c.Conn.Close()
}

// upgradeTransport sends http:// requests as https:// (CLIENT_<NAME>_TLS_ENABLED), so that a fleet
// turns TLS on in its environment without changing the URLs in its code.
type upgradeTransport struct{ t *http.Transport }

func (u upgradeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" {
		// RoundTrippers must not modify the request: a shallow copy with a new URL.
		r := *req
		url := *req.URL
		url.Scheme = "https"
		r.URL = &url
		req = &r
	}
	return u.t.RoundTrip(req)
}

func (u upgradeTransport) CloseIdleConnections() { u.t.CloseIdleConnections() }
