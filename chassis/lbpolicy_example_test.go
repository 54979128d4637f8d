package chassis_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/config"
	"github.com/cloudchassis/kit/discovery"
	"github.com/cloudchassis/kit/discovery/lb"
)

// primary is a balancing policy in one file: every call goes to the first available instance in
// discovery order, and a retry to the next one (active/passive failover).
type primary struct{}

func init() { lb.Register("primary", primary{}) }

func (primary) Build(t *lb.Table, _ lb.Picker) lb.Picker { return primaryPicker{t} }

type primaryPicker struct{ t *lb.Table }

func (p primaryPicker) Pick(_ context.Context, tried *discovery.Tried) *lb.Endpoint {
	var fallback *lb.Endpoint
	for _, e := range p.t.Endpoints {
		switch {
		case !e.Available():
		case tried == nil || !tried.Has(e.Instance().ID):
			return e
		case fallback == nil:
			fallback = e // every instance was tried: the first available one again
		}
	}
	return fallback
}

// A balancing policy added with lb.Register and selected by the environment:
// CLIENT_<NAME>_LB_POLICY for one dependency, LB_POLICY for all of them.
func Example_balancingPolicy() {
	var served [2]atomic.Int64
	var srvs [2]*httptest.Server
	for i := range srvs {
		srvs[i] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served[i].Add(1) }))
		defer srvs[i].Close()
	}
	addrs := strings.TrimPrefix(srvs[0].URL, "http://") + "," + strings.TrimPrefix(srvs[1].URL, "http://")
	env := config.MapLookup(map[string]string{
		"PORT": "0", "ADMIN_PORT": "0", "HOST": "127.0.0.1", "DRAIN_DELAY": "0s",
		"DISCOVERY_STATIC_PRICING": addrs, "CLIENT_PRICING_LB_POLICY": "primary",
	})
	svc, err := chassis.New("shop", chassis.WithEnv(env), chassis.WithoutSignals(), chassis.WithLogOutput(io.Discard))
	if err != nil {
		panic(err)
	}
	client := svc.Client("pricing")
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- svc.Run(ctx) }()
	<-svc.Ready()
	for range 10 {
		resp, err := client.Get("http://pricing/prices/42")
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
	}
	stop()
	<-done
	fmt.Println("served by the first instance:", served[0].Load(), "by the second:", served[1].Load())

	_, err = chassis.New("shop", chassis.WithEnv(config.MapLookup(map[string]string{"LB_POLICY": "fastest"})))
	fmt.Println(err)
	// Output:
	// served by the first instance: 10 by the second: 0
	// config: LB_POLICY="fastest": not a registered balancing policy; known: least_request, p2c, primary, random, ring_hash, round_robin
}

// An unknown CLIENT_<NAME>_LB_POLICY makes Run fail before anything starts, listing the known names.
func TestClientUnknownLBPolicy(t *testing.T) {
	svc, err := chassis.New("shop", chassis.WithEnv(config.MapLookup(map[string]string{
		"PORT": "0", "ADMIN_PORT": "0", "DISCOVERY_STATIC_PRICING": "127.0.0.1:1", "CLIENT_PRICING_LB_POLICY": "nope",
	})), chassis.WithoutSignals(), chassis.WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	svc.Client("pricing")
	err = svc.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), `CLIENT_PRICING_LB_POLICY="nope": not a registered balancing policy; known: least_request, p2c`) {
		t.Fatalf("Run: %v", err)
	}
}
