package lb

import (
	"cmp"
	"context"
	"slices"

	"github.com/cloudchassis/kit/discovery"
)

func init() { Register(RingHash, ringHash{}) }

// maxRing caps the ring's points (16 MiB), so that extreme weights cannot make a rebuild slow or large.
const maxRing = 1 << 20

type hashKey struct{}

// WithHashKey returns a context whose calls RingHash maps by key. Other policies ignore it.
func WithHashKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, hashKey{}, key)
}

type ringHash struct{}

func (ringHash) Build(t *Table, _ Picker) Picker {
	p := &ringPicker{random: newRandomPicker(t)}
	p.points, p.owners = ring(t.Endpoints, t.Weights, t.b.opts.vnodes)
	return p
}

type ringPicker struct {
	random *randomPicker // for picks without a key
	points []uint64      // sorted ring points
	owners []int32       // index into Endpoints of each point
}

// Pick returns the owner of the key's place on the ring, walking on past unavailable endpoints. A
// retry keeps it too: a key belongs to its instance.
func (p *ringPicker) Pick(ctx context.Context, _ *discovery.Tried) *Endpoint {
	key, ok := ctx.Value(hashKey{}).(string)
	if !ok {
		return p.random.pick()
	}
	t := p.random.t
	i, _ := slices.BinarySearch(p.points, hashString(key))
	n := len(p.points)
	for k := range n {
		if o := int(p.owners[(i+k)%n]); t.available(o) {
			return t.Endpoints[o]
		}
	}
	return nil
}

// ring places weights[i]*vnodes points for each instance, hashed from its ID so that they do not
// depend on the other instances: adding or removing one moves only the keys on its own points.
func ring(active []*Endpoint, weights []int, vnodes int) ([]uint64, []int32) {
	total := 0
	for _, w := range weights {
		total += w * vnodes
	}
	scale := 1.0
	if total > maxRing {
		scale = float64(maxRing) / float64(total)
	}
	type point struct {
		h   uint64
		idx int32
	}
	pts := make([]point, 0, min(total, maxRing+len(active)))
	for i, e := range active {
		base := hashString(e.key)
		n := max(int(float64(weights[i]*vnodes)*scale), 1)
		for k := range n {
			pts = append(pts, point{mix64(base + uint64(k+1)*0x9e3779b97f4a7c15), int32(i)})
		}
	}
	// Ties (practically impossible) are broken by ID so the ring does not depend on snapshot order.
	slices.SortFunc(pts, func(a, b point) int {
		if c := cmp.Compare(a.h, b.h); c != 0 {
			return c
		}
		return cmp.Compare(active[a.idx].key, active[b.idx].key)
	})
	points, owners := make([]uint64, len(pts)), make([]int32, len(pts))
	for i, p := range pts {
		points[i], owners[i] = p.h, p.idx
	}
	return points, owners
}

// hashString is 64-bit FNV-1a with a murmur3 finalizer (FNV alone mixes the last bytes poorly).
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}

func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9a62d07fe53
	h ^= h >> 33
	return h
}
