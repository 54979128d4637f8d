package pricing_test

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudchassis/kit/examples/shop/internal/pricing"
	"github.com/cloudchassis/kit/examples/shop/internal/pricing/pricingpb"
)

func TestGRPCPrices(t *testing.T) {
	g := pricing.NewGRPCServer("USD", nil, nil)
	ctx := t.Context()
	p, err := g.GetPrice(ctx, &pricingpb.GetPriceRequest{ProductId: "p-001"})
	if err != nil || pricing.FromProto(p) != pricing.PriceOf("p-001", "USD") {
		t.Fatalf("GetPrice(p-001) = %v, %v; want the HTTP route's price", p, err)
	}
	ps, err := g.GetPrices(ctx, &pricingpb.GetPricesRequest{ProductIds: []string{"p-001", "p-002"}})
	if err != nil || len(ps.GetPrices()) != 2 || pricing.FromProto(ps.GetPrices()[1]) != pricing.PriceOf("p-002", "USD") {
		t.Fatalf("GetPrices = %v, %v", ps, err)
	}
	for name, call := range map[string]func() error{
		"empty id": func() error {
			_, err := g.GetPrice(ctx, &pricingpb.GetPriceRequest{})
			return err
		},
		"bad id in batch": func() error {
			_, err := g.GetPrices(ctx, &pricingpb.GetPricesRequest{ProductIds: []string{"a", "b c"}})
			return err
		},
		"batch too large": func() error {
			_, err := g.GetPrices(ctx, &pricingpb.GetPricesRequest{ProductIds: strings.Split(strings.Repeat("x,", pricing.MaxBatch)+"x", ",")})
			return err
		},
	} {
		if got := status.Code(call()); got != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, got)
		}
	}
}

// The gRPC API takes the same faults as the HTTP routes: a storm is UNAVAILABLE, the error rate
// INTERNAL, and latency ends early with the caller's deadline.
func TestGRPCChaos(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		chaos := pricing.NewChaos()
		g := pricing.NewGRPCServer("EUR", chaos, nil)
		call := func(ctx context.Context) error {
			_, err := g.GetPrice(ctx, &pricingpb.GetPriceRequest{ProductId: "p-001"})
			return err
		}
		chaos.Set(pricing.Faults{Storm: pricing.Duration(5 * time.Second)})
		if got := status.Code(call(t.Context())); got != codes.Unavailable {
			t.Errorf("during a storm: %v, want Unavailable", got)
		}
		time.Sleep(5 * time.Second)
		if err := call(t.Context()); err != nil {
			t.Errorf("after the storm: %v", err)
		}
		chaos.Set(pricing.Faults{ErrorRate: 1})
		if got := status.Code(call(t.Context())); got != codes.Internal {
			t.Errorf("error rate 1: %v, want Internal", got)
		}
		chaos.Set(pricing.Faults{Latency: pricing.Duration(300 * time.Millisecond)})
		start := time.Now()
		if err := call(t.Context()); err != nil || time.Since(start) != 300*time.Millisecond {
			t.Errorf("latency 300ms: %v after %v", err, time.Since(start))
		}
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start = time.Now()
		if got := status.Code(call(ctx)); got != codes.DeadlineExceeded || time.Since(start) != 100*time.Millisecond {
			t.Errorf("latency beyond the deadline: %v after %v, want DeadlineExceeded after 100ms", got, time.Since(start))
		}
	})
}
