package discovery

import (
	"fmt"
	"sync"
	"testing"
)

func TestTriedRecords(t *testing.T) {
	tr := new(Tried)
	for i := range 10 { // past the inline array
		tr.Add(fmt.Sprint(i))
		tr.Add(fmt.Sprint(i)) // duplicates are kept once
	}
	if tr.Len() != 10 {
		t.Fatalf("Len = %d, want 10", tr.Len())
	}
	for i := range 10 {
		if !tr.Has(fmt.Sprint(i)) {
			t.Fatalf("Has(%d) = false", i)
		}
	}
	if tr.Has("x") {
		t.Fatal(`Has("x") = true`)
	}
	var zero Tried // the zero value works too
	zero.Add("a")
	if !zero.Has("a") || zero.Len() != 1 {
		t.Fatal("zero Tried does not record")
	}
}

func TestTriedConcurrent(t *testing.T) {
	tr := new(Tried)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 100 {
				tr.Add(fmt.Sprint(i, j%3))
				tr.Has("x")
			}
		})
	}
	wg.Wait()
	if tr.Len() != 24 {
		t.Fatalf("Len = %d, want 24", tr.Len())
	}
}

func TestTriedAllocations(t *testing.T) {
	ids := []string{"a", "b", "c"}
	allocs := testing.AllocsPerRun(100, func() {
		tr := new(Tried)
		for _, id := range ids {
			tr.Add(id)
		}
		sink = tr
	})
	if allocs > 1 {
		t.Fatalf("new(Tried) and 3 Adds: %v allocations, want 1", allocs)
	}
}

var sink *Tried
