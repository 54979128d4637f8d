package consultest_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hashicorp/consul/api"

	"github.com/cloudchassis/kit/internal/consultest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDevAgentKillRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real consul agent; skipped with -short")
	}
	a := consultest.StartDev(t)
	if err := a.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "x", Name: "x", Port: 1}); err != nil {
		t.Fatal(err)
	}
	a.Restart()
	a.WaitReady(consultest.DevReadyTimeout)
	svcs, err := a.Client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["x"]; ok {
		t.Error("a restarted dev agent kept its services; the restart tests depend on it forgetting them")
	}
}

func TestProxyDownUp(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer backend.Close()
	p := consultest.NewProxy(t, backend.Listener.Addr().String())
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	get := func() error {
		resp, err := c.Get("http://" + p.Addr())
		if err != nil {
			return err
		}
		return resp.Body.Close()
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}
	p.Down()
	for range 3 {
		if err := get(); err == nil {
			t.Fatal("request through a down proxy succeeded")
		}
	}
	p.Up()
	if err := get(); err != nil {
		t.Fatal(err)
	}
	if acc, ref := p.Counts(); acc != 2 || ref != 3 {
		t.Errorf("counts %d forwarded, %d reset; want 2, 3", acc, ref)
	}
}

func ExampleStartProxy() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "agent") }))
	defer backend.Close()
	p, err := consultest.StartProxy(backend.Listener.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	p.Down() // the "agent" is unreachable
	_, err = c.Get("http://" + p.Addr())
	fmt.Println("down:", err != nil)
	p.Up()
	resp, err := c.Get("http://" + p.Addr())
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println("up:", string(b))
	}
	_, refused := p.Counts()
	fmt.Println("reset while down:", refused)
	// Output:
	// down: true
	// up: agent
	// reset while down: 1
}

// The agent's DNS interface answers on DNSAddr: a registered service resolves through the standard
// library's resolver pointed at it.
func TestDevAgentDNS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real consul agent; skipped with -short")
	}
	a := consultest.StartDev(t)
	if err := a.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web-1", Name: "web", Address: "127.0.0.2", Port: 8080}); err != nil {
		t.Fatal(err)
	}
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, a.DNSAddr)
	}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, srvs, err := r.LookupSRV(t.Context(), "", "", "web.service.consul")
		if err == nil && len(srvs) == 1 && srvs[0].Port == 8080 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("SRV web.service.consul at %s: %v %v", a.DNSAddr, srvs, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
