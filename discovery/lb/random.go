package lb

import (
	"context"
	"slices"

	"github.com/cloudchassis/kit/discovery"
)

func init() { Register(Random, random{}) }

type random struct{}

func (random) Build(t *Table, _ Picker) Picker { return newRandomPicker(t) }

type randomPicker struct {
	t   *Table
	cum []uint64 // cumulative weights; nil when unweighted
}

func newRandomPicker(t *Table) *randomPicker {
	p := &randomPicker{t: t}
	if t.Weighted {
		p.cum = make([]uint64, len(t.Weights))
		var sum uint64
		for i, w := range t.Weights {
			sum += uint64(w)
			p.cum[i] = sum
		}
	}
	return p
}

func (p *randomPicker) Pick(_ context.Context, tried *discovery.Tried) *Endpoint {
	return p.t.keepUnlessTried(p.pick(), tried)
}

func (p *randomPicker) pick() *Endpoint {
	t := p.t
	r := t.Rand()
	var i int
	if p.cum != nil {
		i, _ = slices.BinarySearch(p.cum, bounded64(r, p.cum[len(p.cum)-1])+1)
	} else {
		i = bounded(uint32(r), len(t.Endpoints))
	}
	if t.available(i) {
		return t.Endpoints[i]
	}
	return t.scanFrom(i)
}
