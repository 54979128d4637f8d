package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cloudchassis/kit/examples/shop/internal/pricing"
	"github.com/cloudchassis/kit/examples/shop/internal/pricing/pricingpb"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
	"github.com/cloudchassis/kit/grpcx/grpcclient"
)

// Protocols the gateway can call pricing with (GATEWAY_PRICING_PROTOCOL).
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http"
)

// pricer asks pricing for prices, over one protocol. Each method returns the instance that answered
// (empty when none did) and an *UpstreamError on failure.
type pricer interface {
	price(ctx context.Context, id string) (shop.Price, string, error)
	prices(ctx context.Context, ids []string) ([]shop.Price, string, error)
}

// httpPricer calls pricing's HTTP routes.
type httpPricer struct {
	c       *http.Client
	timeout time.Duration
}

func (p httpPricer) price(ctx context.Context, id string) (shop.Price, string, error) {
	var out shop.Price
	inst, err := call(ctx, p.c, PricingService, http.MethodGet, "/prices/"+id, "/prices/{id}", p.timeout, nil, &out)
	return out, inst, err
}

func (p httpPricer) prices(ctx context.Context, ids []string) ([]shop.Price, string, error) {
	var out []shop.Price
	inst, err := call(ctx, p.c, PricingService, http.MethodGet, "/prices?ids="+url.QueryEscape(strings.Join(ids, ",")),
		"/prices", p.timeout, nil, &out)
	return out, inst, err
}

// grpcPricer calls pricing's gRPC API (pricingpb.Pricing). Both methods are declared free of side
// effects in the proto, so the Chassis client retries and hedges them like the HTTP GETs.
type grpcPricer struct {
	c       pricingpb.PricingClient
	timeout time.Duration
}

func (p grpcPricer) price(ctx context.Context, id string) (shop.Price, string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var md metadata.MD
	res, err := p.c.GetPrice(ctx, &pricingpb.GetPriceRequest{ProductId: id}, grpc.Header(&md))
	inst := first(md.Get(shop.MetaInstance))
	if err != nil {
		return shop.Price{}, inst, grpcError(err)
	}
	return pricing.FromProto(res), inst, nil
}

func (p grpcPricer) prices(ctx context.Context, ids []string) ([]shop.Price, string, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var md metadata.MD
	res, err := p.c.GetPrices(ctx, &pricingpb.GetPricesRequest{ProductIds: ids}, grpc.Header(&md))
	inst := first(md.Get(shop.MetaInstance))
	if err != nil {
		return nil, inst, grpcError(err)
	}
	out := make([]shop.Price, len(res.GetPrices()))
	for i, pr := range res.GetPrices() {
		out[i] = pricing.FromProto(pr)
	}
	return out, inst, nil
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// grpcError is the UpstreamError of a failed gRPC call: a deadline or cancellation as the context
// error it is (so that it answers 504 like an HTTP timeout), any other code as the HTTP status the
// Chassis client classifies it as (INVALID_ARGUMENT 400, NOT_FOUND 404, UNAVAILABLE 503, ...).
func grpcError(err error) *UpstreamError {
	st := status.Convert(err)
	switch st.Code() {
	case codes.DeadlineExceeded:
		return &UpstreamError{Service: PricingService, Err: fmt.Errorf("%s: %w", st.Message(), context.DeadlineExceeded)}
	case codes.Canceled:
		return &UpstreamError{Service: PricingService, Err: fmt.Errorf("%s: %w", st.Message(), context.Canceled)}
	}
	return &UpstreamError{Service: PricingService, Status: grpcclient.HTTPStatus(st.Code()), Detail: st.Message(), Err: err}
}
