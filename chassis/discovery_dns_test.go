package chassis_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/discovery/dns/dnstest"
	"github.com/cloudchassis/kit/internal/consultest"
)

func pricingBackend(t *testing.T, body string) *chassis.Service {
	t.Helper()
	backend, err := chassis.New("pricing", chassis.WithEnv(env()))
	if err != nil {
		t.Fatal(err)
	}
	backend.HandleFunc("GET /price", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) })
	start(t, backend)
	return backend
}

func callOnce(t *testing.T, c *http.Client, url string) (string, error) {
	t.Helper()
	res, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b), nil
}

// DISCOVERY=dns reads SRV records by default (DISCOVERY_DNS_TEMPLATE {service}.service.consul) and
// A records with DISCOVERY_DNS_PORT.
func TestClientWithDNSDiscovery(t *testing.T) {
	backend := pricingBackend(t, "42")
	host, portStr, _ := net.SplitHostPort(backend.Addr())
	port, _ := strconv.Atoi(portStr)
	srv := dnstest.New(t)
	srv.SetSRV("pricing.service.consul", 0, dnstest.SRV{Target: "node-1.node.dc1.consul", Port: uint16(port), Weight: 1})
	srv.SetAddrs("node-1.node.dc1.consul", 0, netip.MustParseAddr(host))
	srv.SetAddrs("pricing.internal", 0, netip.MustParseAddr(host))

	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"SRV", []string{"DISCOVERY", "dns", "DISCOVERY_DNS_SERVER", srv.Addr()}},
		{"A", []string{"DISCOVERY", "dns", "DISCOVERY_DNS_SERVER", srv.Addr(), "DISCOVERY_DNS_TEMPLATE", "{service}.internal", "DISCOVERY_DNS_PORT", portStr}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			front, err := chassis.New("gateway", chassis.WithEnv(env(tc.env...)))
			if err != nil {
				t.Fatal(err)
			}
			pricing := front.Client("pricing")
			start(t, front)
			if body, err := callOnce(t, pricing, "http://pricing/price"); err != nil || body != "42" {
				t.Fatalf("%q %v", body, err)
			}
		})
	}
}

func TestDNSDiscoverySettingsAreChecked(t *testing.T) {
	for _, tc := range []struct {
		env []string
		bad string
	}{
		{[]string{"DISCOVERY_DNS_TEMPLATE", "pricing.service.consul"}, "DISCOVERY_DNS_TEMPLATE"},
		{[]string{"DISCOVERY_DNS_SERVER", "127.0.0.1:99999"}, "DISCOVERY_DNS_SERVER"},
		{[]string{"DISCOVERY_DNS_PORT", "-1"}, "DISCOVERY_DNS_PORT"},
	} {
		_, err := chassis.New("gateway", chassis.WithEnv(env(append([]string{"DISCOVERY", "dns"}, tc.env...)...)))
		var cerr *config.Error
		if !errors.As(err, &cerr) || !strings.Contains(err.Error(), tc.bad) {
			t.Errorf("%v: error %v; want a config error naming %s", tc.env, err, tc.bad)
		}
	}
}

// TestDNSDiscoveryThroughConsul runs against a real Consul agent: services register with Consul
// (CONSUL_HTTP_ADDR) and a caller finds them through the agent's DNS interface with DISCOVERY=dns; an
// instance leaves the caller's list at the start of its drain.
func TestDNSDiscoveryThroughConsul(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent")
	}
	agent := consultest.StartDev(t)
	dnsEnv := []string{"CONSUL_HTTP_ADDR", agent.HTTPAddr, "DISCOVERY", "dns", "DISCOVERY_DNS_SERVER", agent.DNSAddr,
		"DISCOVERY_DNS_REFRESH_MIN", "100ms"}
	var stops []func()
	for _, body := range []string{"a", "b"} {
		svc, err := chassis.New("inventory", chassis.WithEnv(env(append(dnsEnv, "DRAIN_DELAY", "2s")...)))
		if err != nil {
			t.Fatal(err)
		}
		svc.HandleFunc("GET /who", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, body) })
		stop, done := runReady(t, svc)
		stops = append(stops, func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	caller, err := chassis.New("shop", chassis.WithEnv(env(append(dnsEnv, "REGISTER", "false")...)))
	if err != nil {
		t.Fatal(err)
	}
	inv := caller.Client("inventory")
	start(t, caller)

	seen := func(d time.Duration) map[string]int {
		got := map[string]int{}
		for end := time.Now().Add(d); time.Now().Before(end); {
			if body, err := callOnce(t, inv, "http://inventory/who"); err == nil {
				got[body]++
			} else {
				got["error"]++
			}
		}
		return got
	}
	if got := seen(500 * time.Millisecond); got["a"] == 0 || got["b"] == 0 || got["error"] > 0 {
		t.Fatalf("both instances should answer: %v", got)
	}
	if entries, _, err := agent.Client.Health().Service("shop", "", false, nil); err != nil || len(entries) != 0 {
		t.Fatalf("REGISTER=false registered the caller: %v %v", len(entries), err)
	}
	// a drains (deregisters, then serves DRAIN_DELAY): within a refresh the caller stops calling it.
	go stops[0]()
	time.Sleep(500 * time.Millisecond)
	if got := seen(time.Second); got["a"] != 0 || got["b"] == 0 || got["error"] > 0 {
		t.Fatalf("after a's drain started: %v; want only b", got)
	}
	stops[1]()
}
