package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Summary is the launcher's final report; -summary-json writes it as JSON.
type Summary struct {
	Registry    string         `json:"registry"`
	Duration    float64        `json:"duration_s"`
	RateTarget  float64        `json:"rate"`
	Chaos       bool           `json:"chaos"`
	Seed        uint64         `json:"seed"`
	Totals      Totals         `json:"totals"`
	Events      []Event        `json:"events"`
	Instances   []InstanceInfo `json:"instances"`
	Shutdown    Shutdown       `json:"shutdown"`
	ChildPids   []int          `json:"child_pids"`
	RegistryPid int            `json:"registry_pid,omitempty"` // a consul agent the launcher started
	LauncherPid int            `json:"launcher_pid"`
	BinDir      string         `json:"bin_dir"` // where the service binaries were built (removed at exit)
	Soak        *SoakReport    `json:"soak,omitempty"`
}

// Shutdown is how the launcher's own stop went.
type Shutdown struct {
	Stopped     int     `json:"stopped"`     // instances that got SIGTERM
	Killed      int     `json:"killed"`      // of which needed SIGKILL after the grace period
	Seconds     float64 `json:"seconds"`     // until every child was reaped
	Interrupted bool    `json:"interrupted"` // Ctrl-C or SIGTERM ended the run early
}

func (d *demo) summary(end time.Time) Summary {
	start, load, _ := d.running()
	s := Summary{Registry: d.reg.Kind(), Duration: roundTo(end.Sub(start).Seconds(), 0.1), RateTarget: d.o.rate,
		Chaos: d.o.chaos, Seed: d.o.seed, Totals: load.stats.totals(), ChildPids: d.cl.pids(), LauncherPid: pid()}
	switch r := d.reg.(type) {
	case *consulRegistry:
		if r.agent != nil {
			s.RegistryPid = r.agent.Process.Pid
		}
	case *etcdRegistry:
		s.RegistryPid = r.member.Process.Pid
	}
	for _, e := range d.tl.list() {
		if e.Chaos || e.Kind == EventInfo {
			s.Events = append(s.Events, e)
		}
	}
	for _, p := range d.cl.all() {
		s.Instances = append(s.Instances, p.snapshot())
	}
	return s
}

func printSummary(w io.Writer, s Summary) {
	t := s.Totals
	var b strings.Builder
	fmt.Fprintf(&b, "\n== Summary (%s, %.0fs at %.0f req/s, seed %d)\n", s.Registry, s.Duration, s.RateTarget, s.Seed)
	fmt.Fprintf(&b, "requests     %d, %d ok: %.3f%%\n", t.Requests, t.OK, 100*t.SuccessRate)
	fmt.Fprintf(&b, "idempotent   %d, %d ok: %.3f%%   (GETs; the client retries them)\n", t.Idempotent, t.IdempotentOK, 100*t.IdempotentRate)
	fmt.Fprintf(&b, "latency      p50 %.1fms  p99 %.1fms  p99.9 %.1fms  max %.1fms\n", t.P50Ms, t.P99Ms, t.P999Ms, t.MaxMs)
	fmt.Fprintf(&b, "retried      %d requests needed more than one attempt (%d attempts in all)\n", t.Retried, t.Attempts)
	fmt.Fprintf(&b, "degraded     %d answers without a price (pricing slow or failing; the gateway's fallback)\n", t.Degraded)
	var statuses []string
	for _, k := range sortedKeys(t.ByStatus) {
		statuses = append(statuses, fmt.Sprintf("%s×%d", k, t.ByStatus[k]))
	}
	fmt.Fprintf(&b, "statuses     %s\n", strings.Join(statuses, "  "))
	for _, op := range sortedKeys(t.ByOp) {
		v := t.ByOp[op]
		fmt.Fprintf(&b, "  %-24s %6d requests, %.3f%% ok\n", op, v.Requests, 100*rate(v.OK, v.Requests))
	}
	if len(s.Events) > 0 {
		fmt.Fprintf(&b, "events:\n")
		for _, e := range s.Events {
			fmt.Fprintf(&b, "  %6.1fs %-16s %s\n", e.Offset, e.Kind, e.Detail)
			if e.Reaction != "" {
				fmt.Fprintf(&b, "          %-16s %s\n", "", e.Reaction)
			}
		}
	}
	fmt.Fprintf(&b, "shutdown     %d instances stopped in %.1fs, %d needed SIGKILL; every child reaped\n",
		s.Shutdown.Stopped, s.Shutdown.Seconds, s.Shutdown.Killed)
	printFailures(&b, t)
	_, _ = io.WriteString(w, b.String())
}

// printFailures explains every failed request the summary counts: grouped by status, route, the
// gateway instance that answered and the reason, with the first one's detail and when they happened.
func printFailures(b *strings.Builder, t Totals) {
	failed := t.Requests - t.OK
	if failed == 0 {
		fmt.Fprintf(b, "failures     none\n")
		return
	}
	explained := 0
	for _, f := range t.Failures {
		explained += f.Count
	}
	fmt.Fprintf(b, "failures     %d, in %d groups (status, route, instance that answered, reason):\n", failed, len(t.Failures))
	for _, f := range t.Failures {
		when := fmt.Sprintf("at %.1fs", f.First)
		if f.Last > f.First {
			when = fmt.Sprintf("%.1fs–%.1fs", f.First, f.Last)
		}
		fmt.Fprintf(b, "  %s, %s", f, when)
		if f.Detail != "" {
			fmt.Fprintf(b, " (%s)", f.Detail)
		}
		fmt.Fprintln(b)
	}
	if explained != failed {
		fmt.Fprintf(b, "  %d failures not classified (a bug in the launcher's accounting)\n", failed-explained)
	}
}
