package discovery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
)

type otherKey struct{}

func TestTriedContext(t *testing.T) {
	parent, cancel := context.WithCancelCause(context.WithValue(context.Background(), otherKey{}, "v"))
	ctx := WithTried(parent)
	tr := TriedFrom(ctx)
	if tr == nil || tr.Len() != 0 {
		t.Fatalf("TriedFrom(WithTried) = %v, want an empty Tried", tr)
	}
	if TriedFrom(ctx) != tr {
		t.Fatal("TriedFrom returned a different Tried on the second call")
	}
	if got := ctx.Value(otherKey{}); got != "v" {
		t.Fatalf("parent value = %v, want v", got)
	}
	if TriedFrom(context.Background()) != nil {
		t.Fatal("TriedFrom(Background) != nil")
	}
	// A child of the Tried context is cancelled with the parent.
	child, stop := context.WithCancel(ctx)
	defer stop()
	boom := errors.New("boom")
	cancel(boom)
	<-child.Done()
	if ctx.Err() != context.Canceled || context.Cause(child) != boom {
		t.Fatalf("after cancel: Err %v, child cause %v", ctx.Err(), context.Cause(child))
	}
}

func TestTriedRecords(t *testing.T) {
	tr := TriedFrom(WithTried(context.Background()))
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
	tr := TriedFrom(WithTried(context.Background()))
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
		tr := TriedFrom(WithTried(context.Background()))
		for _, id := range ids {
			tr.Add(id)
		}
	})
	if allocs > 1 {
		t.Fatalf("WithTried and 3 Adds: %v allocations, want 1", allocs)
	}
	allocs = testing.AllocsPerRun(100, func() {
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
