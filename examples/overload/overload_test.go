package main

import (
	"context"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestOverload runs a short version of the experiment over loopback. It checks what does not depend
// on the machine's speed: shedding refuses requests with 503 instead of letting them time out, and
// every phase produced answers. The figures (logged) are measurements; the deterministic assertion
// of the goodput and latency targets is guard's TestShedderAdaptsToOverload, in virtual time.
func TestOverload(t *testing.T) {
	if testing.Short() {
		t.Skip("overload experiment over loopback takes about 12 s; skipped in -short")
	}
	cfg := DefaultConfig()
	cfg.Phase, cfg.Warmup = 2*time.Second, time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + rep.String())
	if rep.Capacity.Goodput <= 0 || rep.Unloaded.P99 <= 0 {
		t.Fatalf("no baseline: %+v", rep)
	}
	if rep.On.Shed == 0 {
		t.Errorf("nothing shed at %.0f× capacity", cfg.Overload)
	}
	if rep.On.Timeouts > rep.Off.Timeouts {
		t.Errorf("shedding on: %.0f timeouts/s, more than without (%.0f/s)", rep.On.Timeouts, rep.Off.Timeouts)
	}
}
