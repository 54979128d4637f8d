package catalog

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/cloudchassis/kit/chassis"
	"github.com/cloudchassis/kit/examples/shop/internal/shop"
)

// PricingService is the service reindex asks for prices.
const PricingService = "pricing"

// IndexEntry is one product of the price index that reindex writes.
type IndexEntry struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Cents    int64  `json:"cents"`
	Currency string `json:"currency"`
}

// usageError is a bad argument of the task: exit code 2, as for a bad flag of the service.
type usageError struct{ error }

func (usageError) ExitCode() int { return chassis.ExitConfig }

// Reindex is the catalog's admin task (twelve-factor XII):
//
//	catalog reindex [-out FILE] [CATEGORY...]
//
// It rebuilds the price index of the catalog: every product of the given categories (all when none
// is given), priced by the pricing service, grouped by category and sorted by price, written as JSON
// to FILE (standard output by default). It runs as a one-off process with the catalog's
// configuration: pricing is found the way the catalog's clients find any service (DISCOVERY,
// DISCOVERY_STATIC_PRICING or Consul, CLIENT_PRICING_*). The client is declared when the task runs,
// so the serving catalog does not depend on pricing.
func Reindex(svc *chassis.Service, stdout io.Writer) chassis.TaskFunc {
	return func(ctx context.Context, args []string) error {
		fs := flag.NewFlagSet("reindex", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		out := fs.String("out", "", "write the index to this file instead of standard output")
		if err := fs.Parse(args); err != nil {
			return usageError{fmt.Errorf("reindex: %w (usage: reindex [-out FILE] [CATEGORY...])", err)}
		}
		index, err := buildIndex(ctx, svc.Client(PricingService), fs.Args())
		if err != nil {
			return err
		}
		b, err := json.MarshalIndent(index, "", "  ")
		if err != nil {
			return err
		}
		b = append(b, '\n')
		if *out == "" {
			_, err = stdout.Write(b)
			return err
		}
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			return fmt.Errorf("reindex: %w", err)
		}
		svc.LoggerFor(ctx).Sugar().Infof("reindex: wrote %d categories to %s", len(index), *out)
		return nil
	}
}

// buildIndex prices the products of categories (all when empty) with one batch call to pricing.
func buildIndex(ctx context.Context, pricing *http.Client, categories []string) (map[string][]IndexEntry, error) {
	var picked []shop.Product
	for _, p := range products {
		if len(categories) == 0 || slices.Contains(categories, p.Category) {
			picked = append(picked, p)
		}
	}
	for _, c := range categories {
		if !slices.ContainsFunc(products, func(p shop.Product) bool { return p.Category == c }) {
			return nil, usageError{fmt.Errorf("reindex: no category %q", c)}
		}
	}
	ids := make([]string, len(picked))
	for i, p := range picked {
		ids[i] = p.ID
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"http://"+PricingService+"/prices?ids="+url.QueryEscape(strings.Join(ids, ",")), nil)
	if err != nil {
		return nil, err
	}
	resp, err := pricing.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reindex: pricing: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("reindex: pricing answered %s", resp.Status)
	}
	var prices []shop.Price
	if err := json.NewDecoder(resp.Body).Decode(&prices); err != nil {
		return nil, fmt.Errorf("reindex: pricing's answer: %w", err)
	}
	if len(prices) != len(picked) {
		return nil, errors.New("reindex: pricing answered for another set of products")
	}
	index := map[string][]IndexEntry{}
	for i, p := range picked {
		index[p.Category] = append(index[p.Category], IndexEntry{ID: p.ID, Name: p.Name, Cents: prices[i].Cents, Currency: prices[i].Currency})
	}
	for _, entries := range index {
		slices.SortFunc(entries, func(a, b IndexEntry) int { return cmp.Or(cmp.Compare(a.Cents, b.Cents), cmp.Compare(a.ID, b.ID)) })
	}
	return index, nil
}
