package chassistest_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/chassistest"
)

// A test of a service that calls another: both run in one cluster and find each other by name; the
// link between them fails on demand. In a real test, t is the test's *testing.T.
func Example() {
	t := &testing.T{} // stands in for the test's t
	c := chassistest.NewCluster(t, chassistest.WithoutLeakCheck())
	c.Start("pricing", func(svc *chassis.Service) error {
		svc.HandleFunc("GET /prices/{sku}", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "42")
		})
		return nil
	})
	shop := c.Start("shop", func(svc *chassis.Service) error {
		pricing := svc.Client("pricing")
		svc.HandleFunc("GET /buy/{sku}", func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), 100*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://pricing/prices/"+r.PathValue("sku"), nil)
			res, err := pricing.Do(req)
			if err != nil {
				http.Error(w, "pricing is down", http.StatusBadGateway)
				return
			}
			defer res.Body.Close()
			price, _ := io.ReadAll(res.Body)
			fmt.Fprintf(w, "%s costs %s", r.PathValue("sku"), price)
		})
		return nil
	})

	res, body := shop.Get(t, "/buy/tea")
	fmt.Println(res.StatusCode, body)

	c.Partition("shop", "pricing")
	res, _ = shop.Get(t, "/buy/tea")
	fmt.Println("partitioned:", res.StatusCode)

	c.Heal()
	c.Link("shop", "pricing").Set(chassistest.Blackhole())
	res, _ = shop.Get(t, "/buy/tea")
	fmt.Println("blackholed:", res.StatusCode)

	for _, in := range []*chassistest.Instance{shop, c.Instances("pricing")[0]} {
		in.Stop(t) // a real test leaves this to its cleanup
	}
	// Output:
	// 200 tea costs 42
	// partitioned: 502
	// blackholed: 502
}
