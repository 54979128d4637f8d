package pricing

import (
	"context"

	"github.com/cloudchassis/kit/examples/shop/internal/pricing/pricingpb"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// GRPCServer answers pricing's gRPC API (pricingpb.Pricing) with the same prices and the same fault
// injection as the HTTP routes.
type GRPCServer struct {
	pricingpb.UnimplementedPricingServer

	currency string
	chaos    *Chaos         // nil: no fault injection
	id       *shop.Identity // nil: no x-instance header
}

// NewGRPCServer returns the gRPC API of an instance whose prices are in currency; a non-nil chaos
// applies its faults to every call, and a non-nil id names the instance in the x-instance header of
// every answer (read at each call: shop.Identify fills it in when the HTTP routes are registered).
func NewGRPCServer(currency string, chaos *Chaos, id *shop.Identity) *GRPCServer {
	return &GRPCServer{currency: currency, chaos: chaos, id: id}
}

// GetPrice implements pricingpb.PricingServer.
func (g *GRPCServer) GetPrice(ctx context.Context, req *pricingpb.GetPriceRequest) (*pricingpb.Price, error) {
	if err := g.begin(ctx); err != nil {
		return nil, err
	}
	if !shop.ValidID(req.GetProductId()) {
		return nil, status.Error(codes.InvalidArgument, "product ids are 1-64 characters of [A-Za-z0-9_.-]")
	}
	return g.price(req.GetProductId()), nil
}

// GetPrices implements pricingpb.PricingServer.
func (g *GRPCServer) GetPrices(ctx context.Context, req *pricingpb.GetPricesRequest) (*pricingpb.GetPricesResponse, error) {
	if err := g.begin(ctx); err != nil {
		return nil, err
	}
	ids := req.GetProductIds()
	if len(ids) > MaxBatch {
		return nil, status.Errorf(codes.InvalidArgument, "at most %d product ids per call", MaxBatch)
	}
	out := &pricingpb.GetPricesResponse{Prices: make([]*pricingpb.Price, 0, len(ids))}
	for _, id := range ids {
		if !shop.ValidID(id) {
			return nil, status.Error(codes.InvalidArgument, "product ids are 1-64 characters of [A-Za-z0-9_.-]")
		}
		out.Prices = append(out.Prices, g.price(id))
	}
	return out, nil
}

// begin names the instance in the answer's header and applies the faults.
func (g *GRPCServer) begin(ctx context.Context) error {
	if g.id != nil && g.id.ID != "" {
		// Fails only outside a server call (a direct method call in a test): nothing to name then.
		_ = grpc.SetHeader(ctx, metadata.Pairs(shop.MetaInstance, g.id.ID))
	}
	if g.chaos == nil {
		return nil
	}
	return g.chaos.grpcFault(ctx)
}

func (g *GRPCServer) price(id string) *pricingpb.Price {
	p := PriceOf(id, g.currency)
	return &pricingpb.Price{ProductId: p.ProductID, Cents: p.Cents, Currency: p.Currency}
}

// FromProto is the shop's Price of a gRPC answer.
func FromProto(p *pricingpb.Price) shop.Price {
	return shop.Price{ProductID: p.GetProductId(), Cents: p.GetCents(), Currency: p.GetCurrency()}
}
