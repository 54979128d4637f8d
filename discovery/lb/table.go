package lb

import (
	"cmp"
	"slices"
)

// Caps on the precomputed schedules, so that extreme weights cannot make a rebuild slow or large.
const (
	maxSchedule = 1 << 16 // round-robin slots
	maxRing     = 1 << 20 // ring points (16 MiB)
)

// table is the immutable pick state published on every change of the instance set or of the
// ejection state. Picks read it through an atomic pointer and never write it.
type table struct {
	active     []*Endpoint // the instances picks choose from
	weight     []float64   // Instance.Weight of active (0 counted as 1)
	weighted   bool        // some weights differ
	checkAvail bool        // some instance may be unavailable (WithAvailability or Available method)

	schedule []int32  // RoundRobin: indices into active, interleaved by weight; nil when unweighted
	cum      []uint64 // Random: cumulative weights
	points   []uint64 // RingHash: sorted ring points
	owners   []int32  // RingHash: index into active of each point

	err            error // returned when active is empty
	errUnavailable error // returned when every candidate is unavailable
}

func (b *Balancer) buildTable(active []*Endpoint, known int) *table {
	t := &table{active: active, weight: make([]float64, len(active))}
	reason := "service has no instances"
	if known > 0 {
		reason = "all instances ejected"
	}
	t.err = &NoInstancesError{Service: b.service, Instances: known, Reason: reason}
	t.errUnavailable = &NoInstancesError{Service: b.service, Instances: known, Reason: "no instance available"}

	ints := make([]int, len(active))
	for i, e := range active {
		w := max(e.Instance().Weight, 1)
		ints[i], t.weight[i] = w, float64(w)
		if w != ints[0] {
			t.weighted = true
		}
		if e.avail != nil {
			t.checkAvail = true
		}
	}
	if b.opts.availability != nil {
		t.checkAvail = true
	}
	switch b.opts.policy {
	case RoundRobin:
		if t.weighted {
			t.schedule = schedule(ints)
		}
	case Random:
		if t.weighted {
			t.cum = make([]uint64, len(ints))
			var sum uint64
			for i, w := range ints {
				sum += uint64(w)
				t.cum[i] = sum
			}
		}
	case RingHash:
		t.points, t.owners = ring(active, ints, b.opts.vnodes)
	}
	return t
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

func (t *table) roundRobin(n uint64) *Endpoint {
	if t.schedule != nil {
		return t.walk(func(k int) *Endpoint { return t.active[t.schedule[(n+uint64(k))%uint64(len(t.schedule))]] }, len(t.schedule))
	}
	size := uint64(len(t.active))
	start := n % size
	if !t.checkAvail {
		return t.active[start]
	}
	return t.scanFrom(int(start))
}

func (t *table) random(r uint64) *Endpoint {
	var i int
	if t.cum != nil {
		i, _ = slices.BinarySearch(t.cum, bounded64(r, t.cum[len(t.cum)-1])+1)
	} else {
		i = bounded(uint32(r), len(t.active))
	}
	if !t.checkAvail || t.active[i].available() {
		return t.active[i]
	}
	return t.scanFrom(i)
}

// ring returns the owner of the first point at or after h, walking on past unavailable instances.
func (t *table) ring(h uint64) *Endpoint {
	i, _ := slices.BinarySearch(t.points, h)
	if i == len(t.points) {
		i = 0
	}
	if e := t.active[t.owners[i]]; !t.checkAvail || e.available() {
		return e
	}
	n := len(t.points)
	return t.walk(func(k int) *Endpoint { return t.active[t.owners[(i+k)%n]] }, n)
}

// walk returns the first available endpoint of at(0), at(1), ... at(n-1).
func (t *table) walk(at func(int) *Endpoint, n int) *Endpoint {
	for k := range n {
		if e := at(k); !t.checkAvail || e.available() {
			return e
		}
	}
	return nil
}

// scan returns the first available endpoint from a random start, or nil.
func (t *table) scan(r uint64) *Endpoint { return t.scanFrom(bounded(uint32(r), len(t.active))) }

func (t *table) scanFrom(start int) *Endpoint {
	n := len(t.active)
	for k := range n {
		if e := t.active[(start+k)%n]; e.available() {
			return e
		}
	}
	return nil
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
