package dns_test

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/cloudchassis/kit/discovery/dns"
	"github.com/cloudchassis/kit/discovery/dns/dnstest"
)

// Follow a service through SRV records, as Consul's DNS interface serves them. A fake server stands
// for the agent; in production pass dns.WithServers("127.0.0.1:8600").
func Example() {
	srv, err := dnstest.Start()
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	srv.SetSRV("orders.service.consul", 0,
		dnstest.SRV{Target: "node-a.node.dc1.consul", Port: 8080, Weight: 1},
		dnstest.SRV{Target: "node-b.node.dc1.consul", Port: 8080, Weight: 1})
	srv.SetAddrs("node-a.node.dc1.consul", 0, netip.MustParseAddr("10.0.0.1"))
	srv.SetAddrs("node-b.node.dc1.consul", 0, netip.MustParseAddr("10.0.0.2"))

	r, err := dns.New(dns.WithServers(srv.Addr()))
	if err != nil {
		panic(err)
	}
	defer r.Close()
	w, err := r.Watch("orders.service.consul", dns.WithService("orders"))
	if err != nil {
		panic(err)
	}
	defer w.Close()

	snap, err := w.Next(context.Background(), 0)
	if err != nil {
		panic(err)
	}
	fmt.Println(snap.Service, snap.Version, snap.Err)
	for _, in := range snap.Instances {
		fmt.Println(in.ID)
	}
	// Output:
	// orders 1 <nil>
	// 10.0.0.1:8080
	// 10.0.0.2:8080
}
