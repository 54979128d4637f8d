package lb

// buildTable makes the Table over active (known is the size of the instance set) and its Picker.
func (b *Balancer) buildTable(active []*Endpoint, known int) *Table {
	t := &Table{Endpoints: active, Weights: make([]int, len(active)), weight: make([]float64, len(active)), b: b}
	reason := "service has no instances"
	if known > 0 {
		reason = "all instances ejected"
	}
	t.err = &NoInstancesError{Service: b.service, Instances: known, Reason: reason}
	t.errUnavailable = &NoInstancesError{Service: b.service, Instances: known, Reason: "no instance available"}
	for i, e := range active {
		w := max(e.Instance().Weight, 1)
		t.Weights[i], t.weight[i] = w, float64(w)
		if w != t.Weights[0] {
			t.Weighted = true
		}
		if e.avail != nil {
			t.checkAvail = true
		}
	}
	if b.opts.availability != nil {
		t.checkAvail = true
	}
	var prev Picker
	if old := b.table.Load(); old != nil {
		prev = old.picker
	}
	t.picker = b.opts.builder.Build(t, prev)
	return t
}
