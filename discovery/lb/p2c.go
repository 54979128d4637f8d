package lb

import (
	"context"

	"github.com/cloudchassis/kit/discovery"
)

func init() {
	Register(P2C, twoChoices{peakEWMA: true})
	Register(LeastRequest, twoChoices{})
}

// twoChoices is the power of two choices: draw two available endpoints, take the cheaper. P2C's cost
// is the peak-EWMA latency times the calls in flight; LeastRequest's is the calls in flight (plus
// one). Both are divided by the weight.
type twoChoices struct{ peakEWMA bool }

func (c twoChoices) Build(t *Table, _ Picker) Picker {
	return &twoChoicePicker{t: t, peakEWMA: c.peakEWMA}
}

type twoChoicePicker struct {
	t        *Table
	peakEWMA bool
}

// avoidCandidates is how many untried endpoints a retry or hedge compares.
const avoidCandidates = 4

// Pick draws two endpoints. A retry or hedge instead takes the cheapest of up to four untried
// endpoints (from a random place): a hedge is sent because the call is slow, and a two-choice pick
// lands on the slow instance P2C otherwise steers around whenever the other candidate is the busy
// one. Four, not all, so that the hedges of many callers do not pile onto one instance.
func (p *twoChoicePicker) Pick(_ context.Context, tried *discovery.Tried) *Endpoint {
	t := p.t
	if tried != nil {
		if i := t.untried(tried, nil, avoidCandidates, p.cost); i >= 0 {
			return t.Endpoints[i]
		}
	}
	n := len(t.Endpoints)
	if n == 1 {
		if t.available(0) {
			return t.Endpoints[0]
		}
		return nil
	}
	for range 3 {
		r := t.Rand()
		i := bounded(uint32(r), n)
		j := bounded(uint32(r>>32), n-1)
		if j >= i {
			j++
		}
		if t.checkAvail {
			xa, ya := t.available(i), t.available(j)
			switch {
			case !xa && !ya:
				continue
			case !xa:
				return t.Endpoints[j]
			case !ya:
				return t.Endpoints[i]
			}
		}
		if p.cost(j) < p.cost(i) {
			return t.Endpoints[j]
		}
		return t.Endpoints[i]
	}
	return t.scanFrom(bounded(uint32(t.Rand()), n))
}

// cost is the load of Endpoints[i] divided by its weight.
func (p *twoChoicePicker) cost(i int) float64 {
	t := p.t
	e := t.Endpoints[i]
	var c float64
	if p.peakEWMA {
		c = e.cost(t.b.coarse.Load(), t.b.tau)
	} else {
		c = float64(e.inflight.Load() + 1)
	}
	if t.Weighted {
		c /= t.weight[i]
	}
	return c
}
