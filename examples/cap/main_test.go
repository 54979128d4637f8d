package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCAP runs the demonstration on a real 3-server cluster (consul and iptables, as root) and
// checks what it claims: the partitioned server answers a stale read with the old value and refuses
// default and consistent reads, while the majority commits the new value and serves it
// consistently, and the healed server catches up.
func TestCAP(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs a 3-server consul cluster and partitions it with iptables; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out bytes.Buffer
	o, err := run(ctx, &out)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatal(err)
	}
	if o.StaleValue != "v1" {
		t.Errorf("stale read from the partitioned %s = %q, want the old value v1", o.Partitioned, o.StaleValue)
	}
	if o.StaleKnowLeader {
		t.Error("the partitioned server's stale answer claims a known leader")
	}
	if o.StaleLag < time.Second {
		t.Errorf("stale answer's last contact %s, want at least the heartbeat timeout (1s)", o.StaleLag)
	}
	for name, err := range map[string]error{"default": o.DefaultErr, "consistent": o.ConsistentErr} {
		if err == nil {
			t.Errorf("%s read from the partitioned server answered; want it refused", name)
		} else if !strings.Contains(err.Error(), "No cluster leader") && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s read refused with %v; want No cluster leader or a timeout", name, err)
		}
	}
	if o.MajorityValue != "v2" {
		t.Errorf("consistent read on the majority = %q, want v2", o.MajorityValue)
	}
	if o.HealedValue != "v2" {
		t.Errorf("after the heal the server says %q, want v2", o.HealedValue)
	}
	if o.GossipFailed <= 0 || o.GossipAlive <= 0 {
		t.Errorf("gossip: failed after %s, alive again after %s", o.GossipFailed, o.GossipAlive)
	}
	for _, s := range []string{"AVAILABLE, NOT CONSISTENT", "CONSISTENT, NOT AVAILABLE"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("the narrative lacks %q", s)
		}
	}
}
