package tenure

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHolderLifecycle(t *testing.T) {
	ctx := context.Background()
	h := NewHolder[string]()
	finished := 0
	finish := func(_ context.Context, _ *Tenure[string], released bool) error {
		finished++
		return nil
	}
	if err := h.Release(ctx, finish); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Release when idle: %v, want ErrNotHeld", err)
	}
	select {
	case <-h.Lost():
	default:
		t.Fatal("Lost when idle is not closed")
	}

	tctx, cancel := context.WithCancel(ctx)
	tn := New("session-1", cancel)
	tn.Hold(7)
	h.Set(tn)
	if tok, ok := h.Token(); !ok || tok != 7 {
		t.Fatalf("Token() = %d, %v; want 7, true", tok, ok)
	}
	if _, err := h.Begin(); !errors.Is(err, ErrHeld) {
		t.Fatalf("Begin while held: %v, want ErrHeld", err)
	}

	// A loss: Lost closes, the context ends, Err reports it, Token no longer does.
	lost := errors.Join(ErrLost, errors.New("renew timeout"))
	if !tn.End(lost) || tn.End(nil) {
		t.Fatal("End must report true once, then false")
	}
	if tctx.Err() == nil || !errors.Is(h.Err(), ErrLost) {
		t.Fatalf("after a loss: ctx %v, Err %v", tctx.Err(), h.Err())
	}
	if _, ok := h.Token(); ok {
		t.Fatal("Token() reports a lost tenure")
	}
	// Begin takes the lost tenure away for cleanup.
	if old, err := h.Begin(); err != nil || old != tn || h.Current() != nil {
		t.Fatalf("Begin after a loss: %v, %v", old, err)
	}

	h.Set(New("session-2", func() {}))
	if err := h.Close(ctx, finish); err != nil || finished != 1 {
		t.Fatalf("Close: %v, finished %d; want the tenure released once", err, finished)
	}
	if err := h.Close(ctx, finish); err != nil || finished != 1 {
		t.Fatalf("second Close: %v, finished %d; want a no-op", err, finished)
	}
	if _, err := h.Begin(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Begin after Close: %v, want ErrClosed", err)
	}
}

// Releasing a tenure that had been lost returns the loss joined to the engine's error.
func TestReleaseAfterLossReportsIt(t *testing.T) {
	h := NewHolder[int]()
	tn := New(1, func() {})
	h.Set(tn)
	tn.End(ErrLost)
	var released bool
	err := h.Release(context.Background(), func(_ context.Context, _ *Tenure[int], r bool) error {
		released = r
		return errors.New("revoke failed")
	})
	if released || !errors.Is(err, ErrLost) || err.Error() != "lock: lost\nrevoke failed" {
		t.Fatalf("released %v, err %q; want false and both errors", released, err)
	}
}
