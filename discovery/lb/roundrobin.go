package lb

import (
	"cmp"
	"context"
	"slices"
	"sync/atomic"

	"github.com/cloudchassis/kit/discovery"
)

func init() { Register(RoundRobin, roundRobin{}) }

// maxSchedule caps the weighted round-robin schedule, so that extreme weights cannot make a rebuild
// slow or large.
const maxSchedule = 1 << 16

type roundRobin struct{}

func (roundRobin) Build(t *Table, prev Picker) Picker {
	p := &roundRobinPicker{t: t, next: new(atomic.Uint64)}
	if old, ok := prev.(*roundRobinPicker); ok {
		p.next = old.next // keep the position across rebuilds
	}
	if t.Weighted {
		p.schedule = schedule(t.Weights)
	}
	return p
}

type roundRobinPicker struct {
	t        *Table
	next     *atomic.Uint64
	schedule []int32 // indices into Endpoints, interleaved by weight; nil when unweighted
}

func (p *roundRobinPicker) Pick(_ context.Context, tried *discovery.Tried) *Endpoint {
	t := p.t
	n := p.next.Add(1) - 1
	var e *Endpoint
	if s := p.schedule; s != nil {
		for k := range len(s) {
			if i := int(s[(n+uint64(k))%uint64(len(s))]); t.available(i) {
				e = t.Endpoints[i]
				break
			}
		}
	} else {
		e = t.scanFrom(int(n % uint64(len(t.Endpoints))))
	}
	return t.keepUnlessTried(e, tried)
}

// schedule interleaves weighted instances: instance i takes weights[i] evenly spaced positions in
// [0, 1), and the slots are the instances in position order, so heavy instances are spread through
// the cycle instead of served in bursts.
func schedule(weights []int) []int32 {
	total := 0
	for _, w := range weights {
		total += w
	}
	scale := 1.0
	if total > maxSchedule {
		scale = float64(maxSchedule) / float64(total)
	}
	type slot struct {
		pos float64
		idx int32
	}
	slots := make([]slot, 0, min(total, maxSchedule+len(weights)))
	for i, w := range weights {
		n := max(int(float64(w)*scale), 1)
		for k := range n {
			slots = append(slots, slot{(float64(k) + 0.5) / float64(n), int32(i)})
		}
	}
	slices.SortFunc(slots, func(a, b slot) int {
		if c := cmp.Compare(a.pos, b.pos); c != 0 {
			return c
		}
		return cmp.Compare(a.idx, b.idx)
	})
	out := make([]int32, len(slots))
	for i, s := range slots {
		out[i] = s.idx
	}
	return out
}
